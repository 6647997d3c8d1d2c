"""The ChArUco board: its spec, detection (OpenCV >= 4.7 API), pose, and the printable board.

Board frame (OpenCV's): origin at the board's top-left outer corner, x to the right, y down the printed
page, z into the page. A camera looking straight at the board therefore sees it with T_cam_board ~ identity.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from calibration.errors import BoardNotFoundError, UnitsError
from calibration.geometry import from_rvec_tvec
from robot.config_dict import dataclass_from_dict

log = logging.getLogger(__name__)

DICTIONARIES: dict[str, int] = {n: getattr(cv2.aruco, n) for n in dir(cv2.aruco) if n.startswith("DICT_")}


@dataclass(frozen=True)
class BoardConfig:
    """A ChArUco board as printed. Lengths in metres (measure a printed square with a ruler and enter it)."""

    dictionary: str = "DICT_5X5_100"
    squares_x: int = 9  # squares along the board's width (x)
    squares_y: int = 6  # squares along its height (y)
    square_length_m: float = 0.030
    marker_length_m: float = 0.022
    legacy_pattern: bool = False  # boards printed with OpenCV < 4.6 (differs when squares_y is even)

    def __post_init__(self) -> None:
        if self.dictionary not in DICTIONARIES:
            raise ValueError(f"board.dictionary: {self.dictionary!r} is not an OpenCV ArUco dictionary "
                             f"(e.g. DICT_4X4_50, DICT_5X5_100, DICT_6X6_250)")
        for name in ("squares_x", "squares_y"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 3:
                raise ValueError(f"board.{name}: must be an integer >= 3, got {v!r}")
        for name in ("square_length_m", "marker_length_m"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"board.{name}: must be a positive length in metres, got {v!r}")
            if v > 0.5:
                raise UnitsError(f"board.{name}={v:g} looks like millimetres; lengths are metres "
                                 f"(write {v / 1000:g} for {v:g} mm)")
        if self.marker_length_m >= self.square_length_m:
            raise ValueError(f"board.marker_length_m ({self.marker_length_m:g}) must be smaller than "
                             f"board.square_length_m ({self.square_length_m:g})")
        n_markers = (self.squares_x * self.squares_y) // 2
        available = cv2.aruco.getPredefinedDictionary(DICTIONARIES[self.dictionary]).bytesList.shape[0]
        if n_markers > available:
            raise ValueError(f"board: {self.squares_x}x{self.squares_y} squares need {n_markers} markers, "
                             f"{self.dictionary} has {available}; use a bigger dictionary or fewer squares")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BoardConfig":
        return dataclass_from_dict(cls, d, "board")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def n_corners(self) -> int:
        """Inner chessboard corners (the points ChArUco detects)."""
        return (self.squares_x - 1) * (self.squares_y - 1)

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_length_m, self.squares_y * self.square_length_m

    @property
    def center(self) -> np.ndarray:
        """Board centre in the board frame (m)."""
        w, h = self.size_m
        return np.array([w / 2, h / 2, 0.0])


def make_board(cfg: BoardConfig) -> cv2.aruco.CharucoBoard:
    d = cv2.aruco.getPredefinedDictionary(DICTIONARIES[cfg.dictionary])
    board = cv2.aruco.CharucoBoard((cfg.squares_x, cfg.squares_y), cfg.square_length_m, cfg.marker_length_m, d)
    board.setLegacyPattern(bool(cfg.legacy_pattern))
    return board


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from an RGB (H, W, 3) or gray image (the stack's frames are RGB)."""
    image = np.asarray(image)
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    else:
        raise ValueError(f"image: expected (H, W) or (H, W, 3), got shape {image.shape}")
    if gray.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8, got {gray.dtype}")
    return gray


@dataclass(frozen=True)
class Detection:
    """ChArUco corners found in one image. ``ids`` (N,) int; ``image_points`` (N, 2) px;
    ``object_points`` (N, 3) m in the board frame; ``n_markers`` ArUco markers seen."""

    ids: np.ndarray
    image_points: np.ndarray
    object_points: np.ndarray
    n_markers: int
    image_size: tuple[int, int]  # (width, height)
    blur_px: float = field(default=float("nan"))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def area_fraction(self) -> float:
        """Area of the detected corners' convex hull over the image area."""
        if len(self) < 3:
            return 0.0
        hull = cv2.convexHull(self.image_points.astype(np.float32))
        w, h = self.image_size
        return float(cv2.contourArea(hull)) / float(w * h)


class BoardDetector:
    """Finds the board in images (sub-pixel ChArUco corners)."""

    def __init__(self, cfg: BoardConfig) -> None:
        self.cfg = cfg
        self.board = make_board(cfg)
        params = cv2.aruco.DetectorParameters()
        # Subpixel refinement of the marker corners makes the interpolated ChArUco corners more precise.
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        self._detector = cv2.aruco.CharucoDetector(self.board, cv2.aruco.CharucoParameters(), params,
                                                   cv2.aruco.RefineParameters())

    def detect(self, image: np.ndarray) -> Detection:
        """Corners in ``image`` (RGB or gray uint8). An empty Detection when no board is visible."""
        gray = to_gray(image)
        h, w = gray.shape
        ch_corners, ch_ids, _marker_corners, marker_ids = self._detector.detectBoard(gray)
        n_markers = 0 if marker_ids is None else len(marker_ids)
        if ch_ids is None or len(ch_ids) == 0:
            return Detection(np.zeros(0, int), np.zeros((0, 2)), np.zeros((0, 3)), n_markers, (w, h))
        # CharucoDetector already refines the interpolated corners (cornerSubPix with a window matched to the
        # marker margin); a second, wider cornerSubPix pulls corners towards marker edges (measured: 0.19 px
        # RMS vs 0.09 px on synthetic views), so none is added here.
        pts = ch_corners.reshape(-1, 1, 2).astype(np.float32)
        obj, img = self.board.matchImagePoints(pts, ch_ids)
        # matchImagePoints shapes differ across OpenCV versions ((N,1,3) on 4.x, (N,3) on 5.0): reshape always.
        obj, img = obj.reshape(-1, 3).astype(np.float64), img.reshape(-1, 2).astype(np.float64)
        return Detection(ch_ids.reshape(-1).astype(int), img, obj, n_markers, (w, h), blur_px(gray, img))


def blur_px(gray: np.ndarray, points: np.ndarray) -> float:
    """Edge blur of the board region as an equivalent Gaussian sigma in pixels (~0.9 for a sharp view).

    A step edge of contrast C blurred by sigma has a peak gradient of C / (sigma * sqrt(2 pi)), so
    sigma = C / (peak gradient * sqrt(2 pi)): C from the patch's 5th-95th percentile grey levels, the peak as the
    99.5th percentile of the gradient magnitude after a fixed 0.7 px pre-smoothing (which keeps sensor noise out
    of the peak and is subtracted in quadrature). Monotonic in blur up to where the board is no longer found;
    the Laplacian-variance ratio used before fell again beyond ~2 px (noise took over) and never refused a view."""
    if len(points) < 3:
        return float("nan")
    x, y, w, h = cv2.boundingRect(points.astype(np.float32))
    patch = gray[max(y, 0):y + h, max(x, 0):x + w].astype(np.float64)
    if min(patch.shape) < 12:
        return float("nan")
    pre = 0.7
    smooth = cv2.GaussianBlur(patch, (0, 0), pre)
    gx = cv2.Sobel(smooth, cv2.CV_64F, 1, 0, ksize=3) / 8.0  # Sobel's weights sum to 8: grey levels per pixel
    gy = cv2.Sobel(smooth, cv2.CV_64F, 0, 1, ksize=3) / 8.0
    peak = float(np.percentile(np.hypot(gx, gy)[3:-3, 3:-3], 99.5))
    lo, hi = np.percentile(patch, [5, 95])
    if peak <= 1e-9 or hi - lo <= 1e-9:
        return float("inf")
    sigma = (hi - lo) / (peak * np.sqrt(2.0 * np.pi))
    return float(np.sqrt(max(sigma ** 2 - pre ** 2, 0.0)))


def estimate_pose(det: Detection, K: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, float]:
    """Board pose T_cam_board (4, 4) from one detection and the reprojection RMS (px).
    IPPE (the planar PnP solver) then Levenberg-Marquardt refinement."""
    if len(det) < 4:
        raise BoardNotFoundError(f"board pose needs >= 4 ChArUco corners, found {len(det)}; "
                                 "show more of the board to the camera")
    if is_collinear(det.object_points):
        raise BoardNotFoundError("the detected corners lie on one line; the board pose is undefined — show more of the board")
    obj, img = det.object_points, det.image_points
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise BoardNotFoundError("solvePnP failed on the detected corners")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
    return from_rvec_tvec(rvec, tvec), rms


def is_collinear(object_points: np.ndarray) -> bool:
    """True when board points (N, 3) on the z=0 plane lie on one line (no pose, no homography from them)."""
    xy = object_points[:, :2] - object_points[:, :2].mean(0)
    sv = np.linalg.svd(xy, compute_uv=False)
    return bool(len(sv) < 2 or sv[1] < 1e-6 * max(sv[0], 1e-12))


# ---------------------------------------------------------------------------------------------- printing
def board_image(cfg: BoardConfig, dpi: int = 300, margin_m: float = 0.01) -> np.ndarray:
    """The board as a (H, W) uint8 raster at ``dpi`` with a white margin (print at 100 % scale)."""
    px_per_m = dpi / 0.0254
    w, h = cfg.size_m
    size = (int(round(w * px_per_m)), int(round(h * px_per_m)))
    img = make_board(cfg).generateImage(size, marginSize=0, borderBits=1)
    m = int(round(margin_m * px_per_m))
    return cv2.copyMakeBorder(img, m, m, m, m, cv2.BORDER_CONSTANT, value=255)


def png_with_dpi(img: np.ndarray, dpi: float) -> bytes:
    """``img`` as PNG bytes that carry their resolution (a pHYs chunk, pixels per metre), so a viewer or printer
    prints it at its physical size. cv2 cannot write DPI and PIL is not in the robot PC's base install: the chunk
    is put into cv2's PNG by hand, right after IHDR (PNG spec: before the first IDAT; any other pHYs dropped)."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("could not encode the board as PNG")
    png = buf.tobytes()
    ppm = int(round(dpi / 0.0254))
    data = struct.pack(">IIB", ppm, ppm, 1)  # unit 1 = metre
    phys = struct.pack(">I", len(data)) + b"pHYs" + data + struct.pack(">I", zlib.crc32(b"pHYs" + data) & 0xFFFFFFFF)
    out, pos = [png[:8]], 8  # the signature, then chunks: length (4), type (4), data, CRC (4)
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, end = png[pos + 4:pos + 8], pos + 12 + length
        if kind != b"pHYs":
            out.append(png[pos:end])
        if kind == b"IHDR":
            out.append(phys)
        pos = end
    return b"".join(out)


def board_svg(cfg: BoardConfig, margin_m: float = 0.01) -> str:
    """The board as SVG with physical sizes in millimetres, so a printer at 100 % scale reproduces the exact
    square length. Square colours and marker bits come from OpenCV's own board, so the layout (legacy or not)
    matches what the detector expects."""
    board = make_board(cfg)
    sq = 100  # px per square in the reference raster used to read the square colours
    ref = board.generateImage((cfg.squares_x * sq, cfg.squares_y * sq), marginSize=0, borderBits=1)
    mm = 1000.0
    s, m = cfg.square_length_m * mm, margin_m * mm
    W, H = cfg.size_m[0] * mm + 2 * m, cfg.size_m[1] * mm + 2 * m
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W:.3f}mm" height="{H:.3f}mm" viewBox="0 0 {W:.3f} {H:.3f}">',
           f'<rect x="0" y="0" width="{W:.3f}" height="{H:.3f}" fill="white"/>', '<g fill="black" shape-rendering="crispEdges">']
    for r in range(cfg.squares_y):
        for c in range(cfg.squares_x):
            if ref[r * sq + 2, c * sq + 2] < 128:  # a black square (white squares hold markers, white at the rim)
                out.append(f'<rect x="{m + c * s:.4f}" y="{m + r * s:.4f}" width="{s:.4f}" height="{s:.4f}"/>')
    d = board.getDictionary()
    n_cells = d.markerSize + 2  # marker bits plus a one-cell black border
    for marker_id, corners in zip(board.getIds(), board.getObjPoints()):
        cells = cv2.aruco.generateImageMarker(d, int(marker_id), n_cells, borderBits=1)  # (n_cells, n_cells)
        x0, y0 = corners[0][0] * mm + m, corners[0][1] * mm + m  # top-left corner of the marker
        cell = cfg.marker_length_m * mm / n_cells
        for i in range(n_cells):
            for j in range(n_cells):
                if cells[i, j] < 128:
                    out.append(f'<rect x="{x0 + j * cell:.4f}" y="{y0 + i * cell:.4f}" width="{cell:.4f}" height="{cell:.4f}"/>')
    out += ["</g>", f'<text x="{m:.1f}" y="{H - m / 3:.1f}" font-size="{max(m / 3, 2):.1f}" font-family="monospace">'
            f'ChArUco {cfg.squares_x}x{cfg.squares_y} {cfg.dictionary} square {s:g} mm marker {cfg.marker_length_m * mm:g} mm'
            f'{" legacy" if cfg.legacy_pattern else ""} - print at 100 %, measure one square</text>', "</svg>"]
    return "\n".join(out)
