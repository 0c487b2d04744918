# Stage 1: copy every image.
import os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name in sorted(os.listdir(src)):
    if name.endswith(".png"):
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
