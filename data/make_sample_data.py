"""Make the bundled sample set: four classes of shapes on cluttered, noisy backgrounds.

The set stands in for a few hundred phone photos: classes of different sizes,
images of different sizes, JPEG and PNG mixed. A small CNN learns it, but not in
one epoch. Running this script again writes the same files byte for byte.

    python data/make_sample_data.py          # writes data/train, data/validation
"""

import argparse
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Images per class, imbalanced like real collections.
TRAIN_COUNTS = {"circle": 120, "square": 100, "triangle": 70, "star": 51}
VALIDATION_COUNTS = {"circle": 30, "square": 25, "triangle": 18, "star": 14}
MIN_SIDE, MAX_SIDE = 150, 400
SEED = 2018


def random_colour(rng, low=0, high=256):
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def shape_points(kind, centre, radius, angle):
    """Corners of the shape, rotated by angle (radians) around centre."""
    if kind == "square":
        corners = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        offsets = [(radius * 0.75 * x, radius * 0.75 * y) for x, y in corners]
    elif kind == "triangle":
        offsets = [(radius * math.cos(a), radius * math.sin(a))
                   for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif kind == "star":
        offsets = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            r = radius if i % 2 == 0 else radius * 0.42
            offsets.append((r * math.cos(a), r * math.sin(a)))
    else:
        raise ValueError(kind)
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = centre
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in offsets]


def draw_background(rng, width, height):
    """A smooth two-colour gradient with blurred blobs and stray lines: clutter."""
    top, bottom = np.array(random_colour(rng)), np.array(random_colour(rng))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = rng.integers(10, max(11, min(width, height) // 4))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=random_colour(rng))
    image = image.filter(ImageFilter.GaussianBlur(radius=12))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 7)):
        points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        draw.line(points, fill=random_colour(rng), width=int(rng.integers(1, 3)))
    return image


def draw_sample(rng, kind):
    width, height = (int(side) for side in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    image = draw_background(rng, width, height)
    draw = ImageDraw.Draw(image)
    short_side = min(width, height)
    radius = rng.uniform(0.25, 0.45) * short_side
    centre = (rng.uniform(radius, width - radius), rng.uniform(radius, height - radius))
    colour = random_colour(rng, 60, 256)
    outline = random_colour(rng, 0, 50)  # a dark outline sets the shape off the clutter
    if kind == "circle":
        rx, ry = radius * rng.uniform(0.8, 1.0), radius * rng.uniform(0.8, 1.0)
        box = [centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry]
        draw.ellipse(box, fill=colour, outline=outline, width=4)
    else:
        points = shape_points(kind, centre, radius, rng.uniform(0, 2 * math.pi))
        draw.polygon(points, fill=colour, outline=outline, width=4)
    # Sensor-like noise, light enough to keep the files small.
    noise = rng.normal(0, 4, size=(height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def save(image, path_without_extension, rng):
    """Three images in four are JPEGs, like phone photos; the rest are PNGs."""
    if rng.random() < 0.75:
        path = path_without_extension + ".jpg"
        image.save(path, quality=75)
    else:
        path = path_without_extension + ".png"
        image.quantize(colors=24, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=os.path.dirname(os.path.abspath(__file__)),
                        help="folder that receives train/, validation/ and train/refImage.png")
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    for split, counts in (("train", TRAIN_COUNTS), ("validation", VALIDATION_COUNTS)):
        for kind, count in counts.items():
            class_dir = os.path.join(args.output_dir, split, kind)
            os.makedirs(class_dir, exist_ok=True)
            for index in range(count):
                save(draw_sample(rng, kind), os.path.join(class_dir, f"{kind}_{index:03d}"), rng)
            print(f"{split}/{kind}: {count} images")
    reference = draw_sample(rng, "star")
    reference.save(os.path.join(args.output_dir, "train", "refImage.png"), optimize=True)
    print("train/refImage.png")


if __name__ == "__main__":
    main()
