"""Drawing masks: the class palette, images back from normalization, overlays, the validation
grid with its legend, and the confusion-matrix picture. Used by the mask writer, the validation
images and the reports, so a class has the same colour everywhere."""

import numpy as np
import torch
from PIL import Image, ImageDraw

from seglight.errors import ConfigError

GAP = 2  # pixels between tiles of the validation grid
LINE = 14  # legend line height: a 10-px swatch and PIL's default font
HEADER = LINE + 2  # the column titles above the validation grid's tiles
BACKGROUND = (40, 40, 40)
IGNORE = 255  # mask value drawn as the image itself (no colour)


def voc_palette(n: int = 256) -> list[list[int]]:
    """The VOC colour map: class i's colour spreads the bits of i over R, G, B (devkit's
    VOClabelcolormap.m); the default for datasets without their own colours."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette


def class_colours(palette: list[list[int]] | None, num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8: the dataset's colours, or the VOC map when it has none."""
    return np.array((palette or voc_palette(num_classes))[:num_classes], np.uint8)


def flat_palette(palette: list[list[int]] | None) -> list[int]:
    """768 ints for a PIL "P" image: class colours first (the VOC colour map when the dataset
    has none), white for ignore (255)."""
    flat = [0] * 768
    for i, rgb in enumerate(palette or voc_palette(255)):
        flat[3 * i : 3 * i + 3] = list(rgb)
    flat[765:768] = [255, 255, 255]
    return flat


def denormalize(images: torch.Tensor, mean, std, rgb_bands=None) -> np.ndarray:
    """Normalized float (C, H, W) or (B, C, H, W) -> uint8 RGB (H, W, 3) or (B, H, W, 3):
    undoes Normalize's (x - mean) / std on [0, 1] images (mean, std: C values), then shows
    `rgb_bands` (3 channel indices) as red, green, blue: by default the first three channels
    (RGB images as they are), a single channel as grey."""
    c = images.shape[-3]
    mean = torch.as_tensor(np.asarray(mean, np.float32)).view(c, 1, 1)
    std = torch.as_tensor(np.asarray(std, np.float32)).view(c, 1, 1)
    x = (images.detach().float().cpu() * std + mean).clamp(0, 1) * 255
    if rgb_bands is None:
        rgb_bands = [0, 1, 2] if c >= 3 else [0, 0, 0]  # fewer than 3: the first as grey
    if max(rgb_bands) >= c:
        raise ConfigError(f"data.rgb_bands: {list(rgb_bands)}, but the images have {c} channels")
    x = x[..., list(rgb_bands), :, :]  # (..., 3, H, W)
    return x.round().to(torch.uint8).movedim(-3, -1).numpy()


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    """(H, W, 3) uint8: palette colour (K, 3) of each labelled pixel of mask (H, W) blended over
    the image with opacity alpha; ignore (and any id beyond the palette) left as the image.
    A multi-label mask (L, H, W) of 0/1 per label: a pixel takes the mean colour of the labels
    it carries; pixels with none (or only ignored ones) are left as the image."""
    if mask.ndim == 3:
        labelled, colours = _label_colours(mask, palette)
    else:
        labelled = (mask >= 0) & (mask < len(palette))
        colours = palette[np.where(labelled, mask, 0)].astype(np.float32)  # (H, W, 3)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.where(labelled[..., None], blended.round(), image).astype(np.uint8)


def _label_colours(mask: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(carries any label (H, W) bool, mean colour of its labels (H, W, 3) float32) for a
    multi-label mask (L, H, W): 1 = carries the label, 0 or ignore = not drawn."""
    on = (mask == 1).astype(np.float32)  # (L, H, W)
    count = on.sum(0)  # (H, W)
    colours = np.einsum("lhw,lc->hwc", on, palette[: len(mask)].astype(np.float32))
    return count > 0, colours / np.maximum(count, 1)[..., None]


def present(mask: np.ndarray, num_classes: int) -> set[int]:
    """Classes shown by a mask: its values (H, W), or the labels with a 1 in a multi-label
    mask (L, H, W)."""
    if mask.ndim == 3:
        return {int(i) for i in np.flatnonzero((mask == 1).any(axis=(1, 2)))}
    return {int(c) for c in np.unique(mask)} & set(range(num_classes))


def draw_grid(
    rows: list[dict],
    palette: np.ndarray,
    names: list[str],
    alpha: float,
    titles: tuple[str, ...] = ("image", "ground truth", "prediction"),
) -> Image.Image:
    """Column `titles` (HEADER px), then one row per image: image | ground truth overlay |
    prediction overlay (| the row's "error" picture, when rows have one), tiles of the largest
    image's size (GAP px apart, top-left aligned);
    then one legend line per class that appears in any shown mask or prediction. Masks: (H, W)
    class ids or (L, H, W) 0/1 per label."""
    cell_h = max(r["image"].shape[0] for r in rows)
    cell_w = max(r["image"].shape[1] for r in rows)
    shown = sorted(
        set().union(*(present(m, len(names)) for r in rows for m in (r["mask"], r["pred"])))
    )
    legend_w = 16 + 6 * max((len(names[c]) for c in shown), default=0)
    columns = 3 + any("error" in r for r in rows)
    width = max(columns * cell_w + (columns - 1) * GAP, legend_w)
    top = HEADER + len(rows) * (cell_h + GAP)
    canvas = Image.new("RGB", (width, top + LINE * len(shown)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles):  # PIL's default font: ~6 px a character
        draw.text((j * (cell_w + GAP), 1), title[: max(1, cell_w // 6)], fill=(255, 255, 255))
    for i, row in enumerate(rows):
        tiles = [
            row["image"],
            overlay(row["image"], row["mask"], palette, alpha),
            overlay(row["image"], row["pred"], palette, alpha),
        ] + ([row["error"]] if "error" in row else [])
        for j, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (j * (cell_w + GAP), HEADER + i * (cell_h + GAP)))
    for k, c in enumerate(shown):
        y = top + k * LINE
        draw.rectangle((2, y + 2, 11, y + 11), fill=tuple(int(v) for v in palette[c]))
        draw.text((15, y), names[c], fill=(255, 255, 255))
    return canvas


def error_map(image: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: red where a labelled pixel is predicted wrong (multi-label (L, H, W):
    any labelled label wrong), grey where nothing is labelled, the image dimmed where right."""
    if mask.ndim == 3:
        labelled = (mask != IGNORE).any(0)
        wrong = ((mask != IGNORE) & (mask != pred)).any(0)
    else:
        labelled, wrong = mask != IGNORE, (mask != IGNORE) & (mask != pred)
    out = (image.astype(np.float32) * 0.4).astype(np.uint8)
    out[~labelled] = (128, 128, 128)
    out[wrong] = (230, 25, 25)
    return out


def confusion_image(confmat: torch.Tensor, class_names: list[str]) -> Image.Image:
    """The confusion matrix as a picture: cell (i, j) = share of class i's pixels predicted as
    j (rows sum to 1), white = 0 to dark blue = 1; class names on the left when they fit."""
    c = confmat.shape[0]
    rows = confmat.double() / confmat.sum(1, keepdim=True).clamp(min=1)  # (C, C) in [0, 1]
    cell = max(4, min(40, 640 // c))
    margin = 8 + 7 * max(len(n) for n in class_names) if c <= 40 else 0
    white, blue = np.array([255, 255, 255]), np.array([8, 48, 107])
    colours = (white + (blue - white) * rows.numpy()[..., None]).astype(np.uint8)  # (C, C, 3)
    grid = np.kron(colours, np.ones((cell, cell, 1), np.uint8))  # (C*cell, C*cell, 3)
    image = Image.new("RGB", (margin + grid.shape[1], grid.shape[0]), "white")
    image.paste(Image.fromarray(grid), (margin, 0))
    if margin:
        draw = ImageDraw.Draw(image)
        for i, name in enumerate(class_names):
            draw.text((2, i * cell + max(0, cell // 2 - 6)), name, fill="black")
    return image
