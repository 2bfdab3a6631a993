"""Speed of the diffusion-prior module: the text-embedding cache, and an SDS step per render size.

    .venv/bin/python benchmarks/priors.py [--quick] [--threads N]

1. Text-embedding cache: wall time of a miss (text encoder + atomic write to disk), of a disk hit (a fresh
   embedder reading the file) and of a memory hit, per prompt, median over distinct prompts. Measured with the
   ``tiny-random`` text encoder and, unless ``--quick``, with a text encoder the size of SD 1.5's (CLIP ViT-L/14
   text tower: 12 layers, width 768, 77 tokens; random weights).
2. SDS step on the CPU with ``tiny-random`` (VAE factor 2): render ``[1, 3, R, R]`` → VAE encode → noise → UNet
   with CFG (batch 2) → stop-gradient surrogate → backward to the render; median wall time per step and R.
3. ``groundtruth:`` twins: views per second of the ground-truth renderer (``scene3d.datasets.gtpriors.render``)
   at 128×128, one camera at a time (as the methods call it, once per step), with one ray per pixel (the twins'
   default) and with 2×2 anti-aliasing, on a freshly generated ``object`` scene; and the time of a groundtruth SDS
   step at 128 px (render + image-space ε, camera changed every step so nothing is cached) against the
   ``tiny-random`` SDS step at 128 px of part 2, in the same process.
4. On a CUDA machine only: the same SDS step (in latent space, 64×64 latents = 512 px) with an SD-1.5-sized UNet
   of random weights (``UNet2DConditionModel``, 860M parameters), fp32 against fp16.

Timings are medians measured in this process; the machine is shared, so compare ratios, not absolute numbers.
Last line: ``cache_speedup=<miss / disk hit>`` for the largest text encoder measured (``--only groundtruth``:
``groundtruth_views_per_s=<one ray per pixel, 128 px>``).
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


def bench_sds_cpu(resolutions: list[int], repeats: int) -> dict[int, float]:
    """Median ms of a tiny-random SDS step per render size."""
    settings = PriorSettings(device="cpu", text_cache_dir=Path(tempfile.mkdtemp()))
    sd = load_diffusion("tiny-random", settings)
    emb = sd.embed("a photo of a chair")
    gen = torch.Generator().manual_seed(0)
    times: dict[int, float] = {}
    for r in resolutions:
        render = torch.rand(1, 3, r, r, requires_grad=True)

        def step() -> None:
            out = sds(sd, sd.encode_images(render), emb, guidance_scale=100.0, generator=gen)
            out.loss.backward()

        step()
        times[r] = _median_ms(step, repeats)
        print(f"sds step cpu tiny-random: render {r}x{r} (latent {r // 2}x{r // 2}): {times[r]:.1f} ms")
    return times


def bench_groundtruth(repeats: int) -> tuple[float, float]:
    """Views/s of the ground-truth renderer at 128 px, one camera at a time; then a groundtruth SDS step at 128 px
    against the tiny-random one. Returns (views/s without anti-aliasing, groundtruth SDS step in ms)."""
    from scene3d.core.cameras import CameraBatch, look_at
    from scene3d.datasets.gtpriors import render
    from scene3d.datasets.synthetic import generate_scene
    from scene3d.methods.common.priors import resolve_prior

    with tempfile.TemporaryDirectory() as tmp:
        folder = generate_scene("object", Path(tmp) / "scene", size=32, views=2)
        sd = resolve_prior("diffusion", f"groundtruth:{folder}", PriorSettings(device="cpu"))
        n = 4 * repeats
        angles = torch.linspace(0.0, 6.0, n)
        eyes = torch.stack([4.0 * torch.cos(angles), 4.0 * torch.sin(angles), 2.0 + 0.2 * torch.sin(3 * angles)], -1)
        cams = CameraBatch.from_fov(look_at(eyes, torch.tensor([0.0, 0.0, 0.3]).expand(n, 3)), 40.0, 128, 128)
        scene = sd.source.base
        render(scene, cams[0])  # builds the ray caster
        rates = {}
        for antialias in (False, True):
            start = time.perf_counter()
            for i in range(n):
                render(scene, cams[i], antialias=antialias)
            rates[antialias] = n / (time.perf_counter() - start)
        print(f"groundtruth render 128x128, one camera at a time: {rates[False]:.1f} views/s (one ray per pixel, the "
              f"twins' default), {rates[True]:.1f} views/s (2x2 anti-aliasing)")
        emb = sd.embed("a scene")
        image = torch.rand(1, 3, 128, 128, requires_grad=True)
        g = torch.Generator().manual_seed(0)
        count = iter(range(10**6))

        def step() -> None:
            i = next(count) % n  # a new camera each step: the render cache never hits
            sds(sd, sd.encode_images(image), emb, guidance_scale=7.5, cameras=cams[i], generator=g).loss.backward()

        ms = _median_ms(step, repeats)
        print(f"sds step cpu groundtruth: render 128x128 (image space): {ms:.1f} ms")
    return rates[False], ms


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
    parser.add_argument("--only", choices=("groundtruth",), default=None, help="run one part only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), CUDA: {torch.cuda.is_available()}")
    repeats = 5 if args.quick else 15
    if args.only == "groundtruth":
        views, gt_ms = bench_groundtruth(repeats)
        tiny_ms = bench_sds_cpu([128], repeats)[128]
        print(f"groundtruth SDS step / tiny-random SDS step at 128 px: {gt_ms / tiny_ms:.2f}")
        print(f"groundtruth_views_per_s={views:.1f}")
        return

    from scene3d.priors.tiny import tiny_text_encoder, tiny_tokenizer

    speedup = bench_cache("tiny-random", tiny_text_encoder(), tiny_tokenizer(), prompts=repeats)
    if not args.quick:
        speedup = bench_cache("sd15-sized text encoder", *_sd15_text_encoder(), prompts=repeats)
    sds_ms = bench_sds_cpu([32, 64] if args.quick else [32, 64, 128], repeats)
    _, gt_ms = bench_groundtruth(repeats)
    if 128 in sds_ms:
        print(f"groundtruth SDS step / tiny-random SDS step at 128 px: {gt_ms / sds_ms[128]:.2f}")
    if torch.cuda.is_available():
        bench_sds_sd15_unet(torch.device("cuda"), repeats)
    else:
        print("gpu: no CUDA device; the fp16-vs-fp32 SDS step with an SD-1.5-sized UNet was not run")
    print(f"cache_speedup={speedup:.1f}")


if __name__ == "__main__":
    main()
