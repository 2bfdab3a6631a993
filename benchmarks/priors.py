"""Speed of the diffusion-prior module: the text-embedding cache, and an SDS step per render size.

    .venv/bin/python benchmarks/priors.py [--quick] [--threads N]

1. Text-embedding cache: wall time of a miss (text encoder + atomic write to disk), of a disk hit (a fresh
   embedder reading the file) and of a memory hit, per prompt, median over distinct prompts. Measured with the
   ``tiny-random`` text encoder and, unless ``--quick``, with a text encoder the size of SD 1.5's (CLIP ViT-L/14
   text tower: 12 layers, width 768, 77 tokens; random weights).
2. SDS step on the CPU with ``tiny-random`` (VAE factor 2): render ``[1, 3, R, R]`` → VAE encode → noise → UNet
   with CFG (batch 2) → stop-gradient surrogate → backward to the render; median wall time per step and R.
3. On a CUDA machine only: the same SDS step (in latent space, 64×64 latents = 512 px) with an SD-1.5-sized UNet
   of random weights (``UNet2DConditionModel``, 860M parameters), fp32 against fp16.

Timings are medians measured in this process; the machine is shared, so compare ratios, not absolute numbers.
Last line: ``cache_speedup=<miss / disk hit>`` for the largest text encoder measured.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from scene3d.priors import PriorSettings, TextEmbedder, load_diffusion, sds


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _sd15_text_encoder() -> tuple[torch.nn.Module, object]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from scene3d.priors.tiny import write_tokenizer_files

    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1)
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    return CLIPTextModel(config).eval().requires_grad_(False), tokenizer


def bench_cache(name: str, text_encoder: torch.nn.Module, tokenizer: object, prompts: int) -> float:
    with tempfile.TemporaryDirectory() as cache:
        first = TextEmbedder(text_encoder, tokenizer, model_id=name, revision="bench", cache_dir=Path(cache))
        texts = [f"a photo of object number {i}, highly detailed" for i in range(prompts)]
        first(["warm-up"])
        miss, memory, disk = [], [], []
        for text in texts:
            start = time.perf_counter()
            first(text, "blurry")
            miss.append(time.perf_counter() - start)
            start = time.perf_counter()
            first(text, "blurry")
            memory.append(time.perf_counter() - start)
        fresh = TextEmbedder(text_encoder, tokenizer, model_id=name, revision="bench", cache_dir=Path(cache))
        for text in texts:
            start = time.perf_counter()
            fresh(text, "blurry")
            disk.append(time.perf_counter() - start)
        assert first.misses == prompts + 1 and fresh.hits == prompts and fresh.misses == 0
    m, d, h = (statistics.median(x) * 1e3 for x in (miss, disk, memory))
    print(f"text cache [{name}]: miss {m:.2f} ms, disk hit {d:.2f} ms, memory hit {h:.3f} ms per prompt "
          f"(miss/disk = {m / d:.1f}x)")
    return m / d


def bench_sds_cpu(resolutions: list[int], repeats: int) -> None:
    settings = PriorSettings(device="cpu", text_cache_dir=Path(tempfile.mkdtemp()))
    sd = load_diffusion("tiny-random", settings)
    emb = sd.embed("a photo of a chair")
    gen = torch.Generator().manual_seed(0)
    for r in resolutions:
        render = torch.rand(1, 3, r, r, requires_grad=True)

        def step() -> None:
            out = sds(sd, sd.encode_images(render), emb, guidance_scale=100.0, generator=gen)
            out.loss.backward()

        step()
        print(f"sds step cpu tiny-random: render {r}x{r} (latent {r // 2}x{r // 2}): {_median_ms(step, repeats):.1f} ms")


def _sd15_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ).eval().requires_grad_(False)


def bench_sds_sd15_unet(device: torch.device, repeats: int, latent: int = 64) -> dict[torch.dtype, float]:
    """SDS step in latent space with an SD-1.5-sized UNet of random weights, fp32 then fp16 (fp16 on CUDA only)."""
    from scene3d.priors import PromptEmbeddings, StableDiffusionPrior
    from scene3d.priors.tiny import tiny_scheduler, tiny_tokenizer

    unet = _sd15_unet()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}: SD-1.5-sized UNet with {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M random parameters")
    results: dict[torch.dtype, float] = {}
    for dtype in (torch.float32, torch.float16) if device.type == "cuda" else (torch.float32,):
        unet.to(device, dtype)
        # a latent-space SDS step uses neither the VAE nor the text encoder
        prior = StableDiffusionPrior(unet, None, None, tiny_tokenizer(), tiny_scheduler())  # type: ignore[arg-type]
        emb = PromptEmbeddings(torch.randn(1, 77, 768, device=device, dtype=dtype),
                               torch.randn(1, 77, 768, device=device, dtype=dtype))
        latents = torch.randn(1, 4, latent, latent, device=device, requires_grad=True)
        gen = torch.Generator(device).manual_seed(0)

        def step() -> None:
            sds(prior, latents, emb, guidance_scale=100.0, generator=gen).loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        step()
        step()
        results[dtype] = _median_ms(step, repeats)
        print(f"sds step {device.type} {str(dtype).removeprefix('torch.')}: {results[dtype]:.1f} ms "
              f"({latent}x{latent} latents, CFG batch 2)")
    if len(results) == 2:
        print(f"gpu fp16 speedup over fp32: {results[torch.float32] / results[torch.float16]:.2f}x")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, tiny text encoder only, two sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), CUDA: {torch.cuda.is_available()}")
    repeats = 5 if args.quick else 15

    from scene3d.priors.tiny import tiny_text_encoder, tiny_tokenizer

    speedup = bench_cache("tiny-random", tiny_text_encoder(), tiny_tokenizer(), prompts=repeats)
    if not args.quick:
        speedup = bench_cache("sd15-sized text encoder", *_sd15_text_encoder(), prompts=repeats)
    bench_sds_cpu([32, 64] if args.quick else [32, 64, 128], repeats)
    if torch.cuda.is_available():
        bench_sds_sd15_unet(torch.device("cuda"), repeats)
    else:
        print("gpu: no CUDA device; the fp16-vs-fp32 SDS step with an SD-1.5-sized UNet was not run")
    print(f"cache_speedup={speedup:.1f}")


if __name__ == "__main__":
    main()
