"""DreamSpace's nerfstudio model: the room's textured mesh plus the imitating network; it renders any camera.

The model holds state only; the pipeline (:mod:`scene3d.methods.dreamspace.pipeline`) fills it stage by stage.

* Before the atlas exists (the first step), a render shows the scan's own colours (grey with simple shading for a
  mesh without colours).
* Once a coarse panorama exists and until it is projected, a render shows the panorama wrapped onto the room from
  the centre (every hit point takes the panorama's colour in its direction from the centre): the room being
  textured, live.
* Afterwards a render reads the atlas' *display texture*: the texels coloured so far, and the imitating network's
  prediction (grey before it trains) everywhere else; after the last stage, the final texture.

Rendering casts rays with :class:`~scene3d.renderers.mesh.MeshRaycaster` (open3d on a CPU, the torch path on CUDA).
The atlas, textures and panoramas have sizes known only once they are made: they are registered empty and take
the checkpoint's sizes when a checkpoint is loaded (``ns-render``, ``ns-viewer``, resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor

from scene3d.core.cameras import equirect_pixels
from scene3d.renderers.atlas import Atlas, AtlasTexels, rasterize_atlas
from scene3d.renderers.mesh import MeshRaycaster, interpolate

from scene3d.methods.dreamspace.imitation import TextureField
from scene3d.methods.dreamspace.panorama import sample_equirect
from scene3d.methods.dreamspace.room import Room
from scene3d.methods.dreamspace.texturing import render_texture

ROOM_KEY = "dreamspace_room"
"""Key of the :class:`~scene3d.methods.dreamspace.room.Room` in the train dataset's metadata."""

RESIZABLE = ("atlas_vertices", "atlas_faces", "atlas_uvs", "atlas_source", "texture", "source", "display", "coarse", "panorama",
             "panorama_weight", "panorama_c2w")  # fmt: skip
"""Buffers whose size is set when they are made (and by a loaded checkpoint)."""


@dataclass
class DreamSpaceModelConfig(ModelConfig):
    """The textured room and its imitating network."""

    _target: type = field(default_factory=lambda: DreamSpaceModel)
    background_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Colour of rays that leave the room (through a hole in a scan)."""
    imitation_frequencies: int = 8
    """Sinusoidal frequencies of the imitating network's position encoding (wavelengths down to the room's size / 2^(n−1))."""
    imitation_hidden_dim: int = 128
    """Neurons per hidden layer of the imitating network."""
    imitation_layers: int = 4
    """Hidden layers of the imitating network."""
    imitation_normals: bool = True
    """Give the surface normal to the imitating network (floor, walls and ceiling get their own styles)."""
    eval_num_rays_per_chunk: int = 1 << 16
    """Rays per chunk when rendering a whole camera."""


class DreamSpaceModel(Model):
    """The room's texture atlas, its textures and panoramas, and the imitating network (module docstring)."""

    config: DreamSpaceModelConfig

    def populate_modules(self) -> None:
        room: Room | None = self.kwargs["metadata"].get(ROOM_KEY)
        if room is None:
            raise ValueError(f"DreamSpaceModel needs the room in the dataset metadata under {ROOM_KEY!r}")
        self.room = room
        self.register_buffer("room_vertices", room.vertices.clone())
        self.register_buffer("room_faces", room.faces.clone())
        colors = room.colors if room.colors is not None else torch.full_like(room.vertices, -1.0)
        self.register_buffer("room_colors", colors.clone())
        self.register_buffer("centre", room.centre.clone())
        self.register_buffer("background", torch.tensor(self.config.background_color, dtype=torch.float32))
        for name in RESIZABLE:
            dtype = {"atlas_faces": torch.long, "atlas_source": torch.long, "source": torch.int8}.get(name, torch.float32)
            self.register_buffer(name, torch.zeros(0, dtype=dtype))
        self.imitation = TextureField(
            room.bounds, n_frequencies=self.config.imitation_frequencies, hidden_dim=self.config.imitation_hidden_dim,
            n_hidden_layers=self.config.imitation_layers, use_normals=self.config.imitation_normals,
        )  # fmt: skip
        self._register_load_state_dict_pre_hook(self._resize_buffers)
        self._raycasters: dict[str, MeshRaycaster] = {}
        self._texels: AtlasTexels | None = None

    def _resize_buffers(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        """Give the resizable buffers the checkpoint's sizes before they are copied."""
        for name in RESIZABLE:
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(state_dict[key], device=getattr(self, name).device))
        self._raycasters.clear()
        self._texels = None

    # ------------------------------------------------------------------ state
    @property
    def has_atlas(self) -> bool:
        return self.atlas_faces.numel() > 0

    @property
    def has_texture(self) -> bool:
        return self.display.numel() > 0

    @property
    def has_panorama(self) -> bool:
        """A coarse panorama exists (the fine one grows on it)."""
        return self.coarse.numel() > 0

    def set_atlas(self, atlas: Atlas) -> None:
        """Adopt ``atlas`` and start its textures empty."""
        self.atlas_vertices = atlas.vertices.float().to(self.device)
        self.atlas_faces = atlas.faces.long().to(self.device)
        self.atlas_uvs = atlas.uvs.float().to(self.device)
        self.atlas_source = atlas.source_vertex.long().to(self.device)
        self.texture = torch.zeros(atlas.height, atlas.width, 3, device=self.device)
        self.source = torch.zeros(atlas.height, atlas.width, dtype=torch.int8, device=self.device)
        self._raycasters.pop("atlas", None)
        self._texels = None

    @property
    def atlas(self) -> Atlas:
        if not self.has_atlas:
            raise RuntimeError("the atlas is made at the first training step")
        height, width = self.texture.shape[:2]
        return Atlas(vertices=self.atlas_vertices, faces=self.atlas_faces, uvs=self.atlas_uvs,
                     source_vertex=self.atlas_source, height=height, width=width)  # fmt: skip

    @property
    def texels(self) -> AtlasTexels:
        """The atlas' surface texels (rasterized once per atlas)."""
        if self._texels is None:
            self._texels = rasterize_atlas(self.atlas)
        return self._texels

    def raycaster(self) -> MeshRaycaster:
        """Ray casting on the atlas mesh once it exists (same triangles, in the same order), else the room mesh."""
        key = "atlas" if self.has_atlas else "room"
        if key not in self._raycasters:
            v, f = (self.atlas_vertices, self.atlas_faces) if key == "atlas" else (self.room_vertices, self.room_faces)
            self._raycasters[key] = MeshRaycaster(v, f)
        return self._raycasters[key]

    # ------------------------------------------------------------------ nerfstudio
    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"imitation": list(self.imitation.parameters())}

    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, Tensor]:
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        rgb, depth, mask, normals = self.render_rays(origins, directions)
        shape = ray_bundle.origins.shape[:-1]
        return {
            "rgb": rgb.reshape(*shape, 3),
            "depth": depth.reshape(*shape, 1),
            "accumulation": mask.float().reshape(*shape, 1),
            "normals": (normals * 0.5 + 0.5).reshape(*shape, 3),
        }

    @torch.no_grad()
    def render_rays(
        self, origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Colour, ray distance, hit mask and normals of rays (module docstring: what is shown at each stage)."""
        raycaster = self.raycaster()
        if self.has_atlas and self.has_texture:
            out = render_texture(raycaster, self.atlas_uvs[self.atlas_faces], self.display, origins, directions,
                                 background=self.background)  # fmt: skip
            return out.rgb, out.depth, out.mask, out.normals
        hits = raycaster.cast(origins, directions)
        normals = torch.where(hits.front_facing[..., None], hits.normals, -hits.normals) * hits.mask[..., None]
        if self.has_panorama:
            d_cam = (hits.points - self.centre) @ self.panorama_c2w[:3, :3]
            uv = equirect_pixels(d_cam, self.panorama.shape[2], self.panorama.shape[1])
            color = sample_equirect(self.current_panorama(), uv)
        elif float(self.room_colors[0, 0]) < 0:  # no colours: grey, lit from the viewer
            shade = (normals * -hits.directions).sum(-1, keepdim=True).clamp(0.0, 1.0)
            color = (0.35 + 0.5 * shade).expand(-1, 3)
        else:
            color = interpolate(hits, self.room_colors[self.room_faces])
        rgb = torch.where(hits.mask[..., None], color, self.background.expand_as(color))
        depth = torch.where(hits.mask, hits.distance, torch.zeros_like(hits.distance))
        return rgb, depth, hits.mask, normals

    def current_panorama(self) -> Float[Tensor, "3 H W"]:
        """The fine panorama so far: the refined tiles' blend where they reach, the upsampled coarse one elsewhere."""
        weight = self.panorama_weight[None]
        return (self.panorama + 1e-3 * self.coarse) / (weight + 1e-3)

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:  # noqa: ANN001
        return {}

    def get_metrics_dict(self, outputs, batch) -> dict[str, Tensor]:  # noqa: ANN001
        return {}

    def get_image_metrics_and_images(self, outputs, batch):  # noqa: ANN001, ANN201
        return {}, {"img": outputs["rgb"]}
