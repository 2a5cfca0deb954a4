"""The README's figure: 36 samples of each family's pretrained model, side by side and labelled.

python scripts/family_samples.py docs/samples.png
"""

import sys

from PIL import Image, ImageDraw

import dgm_cli as dgm
from dgm_cli.plots import image_grid

PANELS = (  # (pretrained model, label, sampler options)
    ("vae", "VAE", {}),
    ("gan", "GAN", {}),
    ("flow", "flow, temperature 0.7", {"temperature": 0.7}),
    ("diffusion", "diffusion, DDIM 50, eta 1", {"steps": 50, "eta": 1.0}),
)
LABEL_HEIGHT, GAP = 22, 16

grids = []
for name, label, options in PANELS:
    model = dgm.load(name, device="cpu")
    grids.append((label, image_grid(model.sample(36, seed=0, **options), nrow=6)))

width = sum(grid.width for _, grid in grids) + GAP * (len(grids) - 1)
canvas = Image.new("L", (width, LABEL_HEIGHT + max(grid.height for _, grid in grids)), 255)
draw, left = ImageDraw.Draw(canvas), 0
for label, grid in grids:
    draw.text((left + 4, 4), label, fill=0)
    canvas.paste(grid, (left, LABEL_HEIGHT))
    left += grid.width + GAP
canvas.save(sys.argv[1])
print(sys.argv[1])
