# Stage 2: one normalised caption per image.
import os, sys
images, captions, dst = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(dst, exist_ok=True)
for name in sorted(os.listdir(images)):
    if not name.endswith(".png"):
        continue
    item = name[:-4]
    with open(os.path.join(captions, item + ".txt"), encoding="utf-8") as f:
        text = " ".join(f.read().split())
    with open(os.path.join(dst, item + ".txt"), "w", encoding="utf-8") as f:
        f.write(text)
