"""The speedup chart, written without plotting libraries: one layout, drawn as PNG and SVG.

The layout is a list of rectangles and text runs in pixel coordinates. The PNG renderer
rasterises them with a built-in 5x7 bitmap font (upper case, digits, a few symbols) and
encodes the image with zlib + struct; the SVG renderer emits the same shapes as elements.
Bars are drawn on a log2 axis from the 1x line: right of it seqkern is faster than torch.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import List, Sequence, Tuple
from xml.sax.saxutils import escape

Color = Tuple[int, int, int]
WHITE, BLACK, GREY = (255, 255, 255), (33, 33, 33), (150, 150, 150)
LIGHT = (225, 225, 225)
FASTER, SLOWER, FAILED = (46, 125, 50), (239, 108, 0), (198, 40, 40)

SCALE = 2                      # font pixel size in image pixels
CHAR_W, CHAR_H = 6 * SCALE, 7 * SCALE   # glyph advance (5 columns + 1 space) and height
ROW_H = CHAR_H + 8
AXIS_W = 560

# 5x7 glyphs, one string of five columns per row, '#' = ink.
GLYPHS = {
    " ": (".....",) * 7,
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("####.", "....#", "....#", ".###.", "....#", "....#", "####."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    ";": (".....", ".##..", ".##..", ".....", ".##..", "..#..", ".#..."),
    "=": (".....", ".....", "#####", ".....", "#####", ".....", "....."),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "/": (".....", "....#", "...#.", "..#..", ".#...", "#....", "....."),
    "(": ("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."),
    ")": (".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."),
    "[": (".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."),
    "]": (".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."),
    "%": ("##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
    ">": (".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."),
    "<": ("...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
}


@dataclass
class Rect:
    x: int
    y: int
    width: int
    height: int
    color: Color


@dataclass
class Text:
    x: int
    y: int          # top of the glyph box
    text: str
    color: Color


@dataclass
class Bar:
    label: str
    speedup: float | None     # None: no value (see note)
    note: str = ""            # shown instead of a value: "n/a", "FAILED"


def _axis_range(values: Sequence[float]) -> Tuple[float, float]:
    low = min([0.5, *values])
    high = max([2.0, *values])
    return 2.0 ** math.floor(math.log2(low)), 2.0 ** math.ceil(math.log2(high))


def _tick_label(value: float) -> str:
    return f"{value:g}X" if value >= 1 else f"1/{round(1 / value)}X"


def layout(title: str, subtitle: str, bars: List[Bar]) -> Tuple[int, int, list]:
    """(width, height, shapes) of the chart."""
    label_w = CHAR_W * max([len(bar.label) for bar in bars] + [1]) + 16
    value_w = CHAR_W * 8 + 16
    width = max(16 + label_w + AXIS_W + value_w, 16 + CHAR_W * max(len(title), len(subtitle)))
    top = 16 + 2 * ROW_H + ROW_H
    height = top + ROW_H * len(bars) + 16
    low, high = _axis_range([bar.speedup for bar in bars if bar.speedup is not None])
    axis_x = 16 + label_w

    def x_of(value: float) -> int:
        return axis_x + round(AXIS_W * (math.log2(value) - math.log2(low)) / (math.log2(high) - math.log2(low)))

    shapes: list = [Rect(0, 0, width, height, WHITE), Text(16, 16, title, BLACK),
                    Text(16, 16 + ROW_H, subtitle, GREY)]
    ticks = [2.0 ** power for power in range(round(math.log2(low)), round(math.log2(high)) + 1)]
    widest = CHAR_W * (max(len(_tick_label(tick)) for tick in ticks) + 1)
    label_every = max(1, math.ceil(widest / (AXIS_W / (len(ticks) - 1))))
    for tick in ticks:
        x = x_of(tick)
        shapes.append(Rect(x, top - 4, 1, ROW_H * len(bars) + 4, BLACK if tick == 1 else LIGHT))
        if round(math.log2(tick)) % label_every == 0:   # labels that fit, always including 1X
            text = _tick_label(tick)
            shapes.append(Text(x - CHAR_W * len(text) // 2, top - ROW_H, text, GREY))
    for row, bar in enumerate(bars):
        y = top + row * ROW_H
        shapes.append(Text(16, y + 4, bar.label, FAILED if bar.note == "FAILED" else BLACK))
        if bar.speedup is None:
            shapes.append(Text(axis_x + AXIS_W + 12, y + 4, bar.note, FAILED if bar.note == "FAILED" else GREY))
            continue
        one, end = x_of(1.0), x_of(bar.speedup)
        left, right = min(one, end), max(one, end)
        shapes.append(Rect(left, y + 3, max(right - left, 2), ROW_H - 6, FASTER if bar.speedup >= 1 else SLOWER))
        shapes.append(Text(axis_x + AXIS_W + 12, y + 4, f"{bar.speedup:.3g}X", BLACK))
    return width, height, shapes


def render_png(width: int, height: int, shapes: list) -> bytes:
    pixels = bytearray(width * height * 3)

    def fill(x, y, w, h, color):
        x0, x1 = max(0, x), min(width, x + w)
        if x1 <= x0:
            return
        run = bytes(color) * (x1 - x0)
        for row in range(max(0, y), min(height, y + h)):
            start = (row * width + x0) * 3
            pixels[start:start + len(run)] = run

    for shape in shapes:
        if isinstance(shape, Rect):
            fill(shape.x, shape.y, shape.width, shape.height, shape.color)
            continue
        for index, char in enumerate(shape.text.upper()):
            glyph = GLYPHS.get(char, GLYPHS["?"])
            left = shape.x + index * CHAR_W
            for gy, row in enumerate(glyph):
                for gx, ink in enumerate(row):
                    if ink == "#":
                        fill(left + gx * SCALE, shape.y + gy * SCALE, SCALE, SCALE, shape.color)
    scanlines = b"".join(b"\x00" + bytes(pixels[y * width * 3:(y + 1) * width * 3]) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)   # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b""))


def render_svg(width: int, height: int, shapes: list) -> str:
    def rgb(color):
        return "#%02x%02x%02x" % color

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="monospace" font-size="{CHAR_H + 2}">']
    for shape in shapes:
        if isinstance(shape, Rect):
            parts.append(f'<rect x="{shape.x}" y="{shape.y}" width="{shape.width}" '
                         f'height="{shape.height}" fill="{rgb(shape.color)}"/>')
        else:
            parts.append(f'<text x="{shape.x}" y="{shape.y + CHAR_H}" fill="{rgb(shape.color)}">'
                         f'{escape(shape.text)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_chart(png_path, svg_path, title: str, subtitle: str, bars: List[Bar]) -> None:
    width, height, shapes = layout(title, subtitle, bars)
    with open(png_path, "wb") as handle:
        handle.write(render_png(width, height, shapes))
    with open(svg_path, "w", encoding="utf-8") as handle:
        handle.write(render_svg(width, height, shapes))
