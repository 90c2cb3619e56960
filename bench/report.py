"""Output of a comparison: a table for the terminal, an image grid for the eye, and the JSON every bench CLI prints
(and writes with --json)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

COLUMNS = [("method", "method", "{}"), ("speedup_compute", "compute x", "{:.2f}"),
           ("speedup_wall", "wall x", "{:.2f}"), ("psnr_db", "PSNR dB", "{:.1f}"), ("ssim", "SSIM", "{:.3f}"),
           ("class_accuracy", "class acc", "{:.3f}"), ("fd_data", "FD data", "{:.2f}")]


def _cell(value, fmt: str) -> str:
    if value is None:
        return "exact" if fmt == "{:.1f}" else "-"
    return fmt.format(value)


def format_table(results: list[dict], full: dict | None = None) -> str:
    rows = []
    if full is not None:
        rows.append(["full (no dit-accel)", "1.00", "1.00", "-", "1.000", f"{full['class_accuracy_full']:.3f}",
                     f"{full['fd_data_full']:.2f}"])
    rows += [[_cell(r.get(key), fmt) for key, _, fmt in COLUMNS] for r in results]
    header = [title for _, title, _ in COLUMNS]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def emit_json(results, path: Path | None = None) -> str:
    """The results as indented JSON, printed to stdout and written to `path` (folders made) when given."""
    text = json.dumps(results, indent=2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    print(text)
    return text


def save_grid(rows: dict[str, torch.Tensor], path: Path, per_row: int = 10) -> Path:
    """One row of images per variant (label on the left is the row order in `rows`), as a PNG."""
    from PIL import Image, ImageDraw
    names = list(rows)
    tiles = [rows[n][:per_row] for n in names]
    size = tiles[0].shape[-1]
    label_w, pad = 150, 2
    grid = Image.new("L", (label_w + per_row * (size + pad), len(names) * (size + pad)), color=255)
    draw = ImageDraw.Draw(grid)
    for r, (name, imgs) in enumerate(zip(names, tiles)):
        y = r * (size + pad)
        draw.text((4, y + size // 2 - 5), name[:22], fill=0)
        for c, img in enumerate(imgs):
            pixels = (img[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            grid.paste(Image.fromarray(pixels, mode="L"), (label_w + c * (size + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
