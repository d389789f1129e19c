"""The "shapes" task: synthetic pictures and questions the demo model is trained and measured on.

A picture has a white or light-grey background and 1 to 4 filled, non-overlapping shapes (circle, square,
triangle) in six colours; its size is anything from 200x150 to 1344x1008 (any aspect ratio in between), so that
small (upscaled), single-piece and sliced pictures all occur. Questions and their exact answers:

- "What shape is in the image?" (one shape)              -> "A red circle." ("An orange circle.")
- "What color is the square?" (the only square)          -> "Blue."
- "How many shapes are there?"                            -> "Three."
- two pictures: "Which image has more shapes?"            -> "The first image." / "The second image."
- two turns: a count question, its answer, then a colour question about the same picture.

Everything is drawn from one seeded numpy generator, so a seed names a data set exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (225, 30, 30), "green": (30, 165, 55), "blue": (35, 70, 215), "yellow": (235, 215, 30),
          "purple": (135, 45, 180), "orange": (245, 135, 20)}
NUMBERS = ("One", "Two", "Three", "Four")
KINDS = ("shape", "color", "count", "compare", "two_turn")
MIN_SIZE, MAX_SIZE = (200, 150), (1344, 1008)
DEMO_SEED = 87  # the bundled demo picture (data/demo.png): a green circle, a yellow square, a purple triangle

Q_SHAPE = "What shape is in the image?"
Q_COUNT = "How many shapes are there?"
Q_COMPARE = "Which image has more shapes?"
Q_DESCRIBE = "Describe the image."  # a training aid (and a demo question): every shape, left to right


def q_color(shape: str) -> str:
    return f"What color is the {shape}?"


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    cx: float
    cy: float
    r: float  # radius of the bounding circle, pixels

    @property
    def anchor(self) -> tuple[float, float]:
        """The shape's one top point, just inside it: the apex of a circle or triangle, a square's top-left
        corner (a feature a patch shows by itself, one per shape: what training marks for counting)."""
        if self.kind == "square":
            a = self.r / np.sqrt(2)
            return self.cx - a + 1, self.cy - a + 1
        return self.cx, self.cy - self.r + 1


@dataclass
class Picture:
    image: Image.Image
    shapes: list[Shape] = field(default_factory=list)
    labels: Image.Image | None = None  # "L": 0 background, i + 1 where shapes[i] is; a training aid


@dataclass(frozen=True)
class Item:
    """One question: the conversation (images as PIL images) and the exact answer expected."""

    kind: str
    messages: list[dict]
    answer: str
    pictures: tuple[Picture, ...] = ()  # in the order the messages show them


def _place(rng: np.random.Generator, w: int, h: int, n: int) -> list[tuple[float, float, float]]:
    """n non-overlapping discs inside the picture, radius 9-17.5% of its short side (at least 10 px)."""
    short = min(w, h)
    for _ in range(200):
        discs: list[tuple[float, float, float]] = []
        for _ in range(n):
            for _ in range(100):
                r = max(10.0, short * rng.uniform(0.09, 0.175))
                if 2 * r > short:
                    r = short / 2.2
                cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
                if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 4) ** 2 for x, y, q in discs):
                    discs.append((cx, cy, r))
                    break
        if len(discs) == n:
            return discs
    raise RuntimeError("no room for the shapes")  # does not happen for 4 shapes at these sizes


def _draw(d: ImageDraw.ImageDraw, s: Shape, rgb: tuple[int, int, int]) -> None:
    x, y, r = s.cx, s.cy, s.r
    if s.kind == "circle":
        d.ellipse([x - r, y - r, x + r, y + r], fill=rgb)
    elif s.kind == "square":
        a = r / np.sqrt(2)  # the square inside the disc
        d.rectangle([x - a, y - a, x + a, y + a], fill=rgb)
    else:  # an upright equilateral triangle inside the disc
        d.polygon([(x, y - r), (x - r * np.sqrt(3) / 2, y + r / 2), (x + r * np.sqrt(3) / 2, y + r / 2)], fill=rgb)


def picture(rng: np.random.Generator, kinds: list[str], colors: list[str]) -> Picture:
    """A random-size picture with the given shapes (kind, colour) at random places."""
    w = int(rng.integers(MIN_SIZE[0], MAX_SIZE[0] + 1))
    h = int(rng.integers(MIN_SIZE[1], MAX_SIZE[1] + 1))
    grey = 255 if rng.random() < 0.5 else int(rng.integers(215, 246))
    img = Image.new("RGB", (w, h), (grey, grey, grey))
    labels = Image.new("L", (w, h), 0)
    d, dl = ImageDraw.Draw(img), ImageDraw.Draw(labels)
    shapes = []
    for (cx, cy, r), kind, color in zip(_place(rng, w, h, len(kinds)), kinds, colors, strict=True):
        s = Shape(kind, color, cx, cy, r)
        base = np.array(COLORS[color])
        rgb = tuple(int(v) for v in np.clip(base + rng.integers(-12, 13, 3), 0, 255))
        _draw(d, s, rgb)
        _draw(dl, s, len(shapes) + 1)
        shapes.append(s)
    return Picture(img, shapes, labels)


def _a(color: str, kind: str) -> str:
    return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {kind}"


def describe(p: Picture) -> str:
    """The answer to Q_DESCRIBE: the count, then every shape's colour and kind, left to right."""
    n = len(p.shapes)
    listed = ", ".join(_a(s.color, s.kind) for s in sorted(p.shapes, key=lambda s: s.cx))
    return f"{NUMBERS[n - 1]} shape{'s' if n > 1 else ''}: {listed}."


def _random_shapes(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    return [SHAPES[int(i)] for i in rng.integers(0, 3, n)], [list(COLORS)[int(i)] for i in rng.integers(0, 6, n)]


def _with_unique(rng: np.random.Generator, n: int) -> tuple[list[str], list[str], str]:
    """n shapes of which one kind occurs exactly once (the one a colour question names)."""
    target = SHAPES[int(rng.integers(0, 3))]
    others = [s for s in SHAPES if s != target]
    kinds = [target] + [others[int(i)] for i in rng.integers(0, 2, n - 1)]
    order = rng.permutation(n)
    kinds = [kinds[int(i)] for i in order]
    colors = [list(COLORS)[int(i)] for i in rng.integers(0, 6, n)]
    return kinds, colors, target


def item(rng: np.random.Generator, kind: str) -> Item:
    """A question of the given kind, with its picture(s) and answer."""
    if kind == "shape":
        kinds, colors = _random_shapes(rng, 1)
        p = picture(rng, kinds, colors)
        answer = _a(colors[0], kinds[0]).capitalize() + "."
        return Item(kind, [{"role": "user", "content": [p.image, Q_SHAPE]}], answer, (p,))
    if kind in ("color", "two_turn"):
        n = int(rng.integers(1, 5))
        kinds, colors, target = _with_unique(rng, n)
        p = picture(rng, kinds, colors)
        answer = colors[kinds.index(target)].capitalize() + "."
        if kind == "color":
            return Item(kind, [{"role": "user", "content": [p.image, q_color(target)]}], answer, (p,))
        msgs = [{"role": "user", "content": [p.image, Q_COUNT]}, {"role": "assistant", "content": NUMBERS[n - 1] + "."},
                {"role": "user", "content": q_color(target)}]
        return Item(kind, msgs, answer, (p,))
    if kind == "count":
        n = int(rng.integers(1, 5))
        p = picture(rng, *_random_shapes(rng, n))
        return Item(kind, [{"role": "user", "content": [p.image, Q_COUNT]}], NUMBERS[n - 1] + ".", (p,))
    if kind == "compare":
        a, b = (int(v) for v in rng.choice(np.arange(1, 5), 2, replace=False))
        pa, pb = picture(rng, *_random_shapes(rng, a)), picture(rng, *_random_shapes(rng, b))
        answer = "The first image." if a > b else "The second image."
        return Item(kind, [{"role": "user", "content": [pa.image, pb.image, Q_COMPARE]}], answer, (pa, pb))
    raise ValueError(f"unknown question kind {kind!r} (choose from {', '.join(KINDS)})")


def demo_item() -> Item:
    """The count question about the bundled demo picture (750x492, sliced), whose answer is "Three."."""
    return item(np.random.default_rng(DEMO_SEED), "count")


def dataset(seed: int, n: int) -> list[Item]:
    """n questions, the kinds in turn (every kind equally often), from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [item(rng, KINDS[i % len(KINDS)]) for i in range(n)]


def score(items: list[Item], answers: list[str]) -> dict[str, float]:
    """Exact-match accuracy per question kind and over all ("all")."""
    right = {k: [0, 0] for k in KINDS}
    for it, a in zip(items, answers, strict=True):
        right[it.kind][0] += a.strip() == it.answer
        right[it.kind][1] += 1
    out = {k: r / n for k, (r, n) in right.items() if n}
    out["all"] = sum(r for r, _ in right.values()) / max(1, sum(n for _, n in right.values()))
    return out
