# Stage 3: "{caption} in the style of painting" per item.
import os, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name in sorted(os.listdir(src)):
    with open(os.path.join(src, name), encoding="utf-8") as f:
        caption = f.read()
    with open(os.path.join(dst, name), "w", encoding="utf-8") as f:
        f.write(caption + " in the style of painting")
