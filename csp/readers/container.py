"""The CSP container itself as a source (re-conversion, ``csp detect`` on containers)."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from csp.container import spec
from csp.container.reader import ContainerReader
from csp.errors import ContainerError
from csp.readers.base import AssociatedImage, Match, Reject, SlideMetadata, SlideReader, SourceLevel
from csp.readers.probe import Probe


class ContainerSourceReader(SlideReader):
    """Reads a complete CSP container through the fast path (every plane of 5-D containers)."""

    name = "csp"

    @classmethod
    def detect(cls, probe: Probe) -> Match | Reject:
        from csp.slide import is_container

        if not is_container(probe.path):
            return Reject(cls.name, "not a CSP container (no Zarr group / zip)")
        try:
            ContainerReader(probe.path).close()
        except ContainerError as exc:
            return Reject(cls.name, exc.detail)
        return Match(cls.name, f"CSP container, format {spec.FORMAT_VERSION.split('.')[0]}.x")

    @classmethod
    def open(cls, probe: Probe) -> ContainerSourceReader:
        return cls(probe.path)

    def __init__(self, path: str) -> None:
        self.path = path
        self._cr = ContainerReader(path)
        m = self._cr.meta
        self.levels = tuple(
            SourceLevel(a.layout.width, a.layout.height, a.layout.tile_width, a.layout.tile_height,
                        a.layout.channels, str(a.dtype), a.encoding) for a in self._cr.levels)
        lay0 = self._cr.levels[0].layout
        #: ``(T, Z)`` planes (format 1.1 5-D levels); the converter then reads every plane.
        self.plane_shape = (lay0.size_t, lay0.size_z)
        icc = m.get("icc_profile")
        self.metadata = SlideMetadata(
            vendor=m.get("vendor", "csp"), mpp_x=m["mpp"]["x"], mpp_y=m["mpp"]["y"],
            objective_power=m.get("objective_power"), scan_date=m.get("scan_date"), scanner=m.get("scanner"),
            icc_profile=None if icc is None else spec.decode_config({"v": icc})["v"],
            channel_names=tuple(m.get("channel_names", ())), barcode=m.get("barcode"),
            provenance=m.get("provenance", {}))
        self.properties = MappingProxyType(dict(m.get("properties", {})))
        self.associated = MappingProxyType({
            n: AssociatedImage(n, a.layout.width, a.layout.height, a.layout.channels, f"csp:{a.path}")
            for n, a in self._cr.associated.items()})

    def read_tile_encoded(self, level: int, col: int, row: int, *, t: int = 0, z: int = 0) -> bytes | None:
        return self._cr.tile_bytes(self._cr.levels[level], col, row, t=t, z=z)

    def read_tile(self, level: int, col: int, row: int, *, t: int = 0, z: int = 0) -> np.ndarray:
        return self._cr.decode_tile(self._cr.levels[level], col, row, t=t, z=z)

    def read_associated(self, name: str) -> np.ndarray:
        return self._cr.read_array(self._cr.associated[name])

    def close(self) -> None:
        self._cr.close()
