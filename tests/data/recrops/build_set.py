"""Rebuild tests/data/recrops/: different photos of similar scenes, for the re-crop detector.

Not run by the tests (the built JPEGs are committed). To reproduce, as root on Debian 12:

    apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb /tmp/ocvdoc
    python tests/data/recrops/build_set.py /tmp/ocvdoc

Each group below holds different shots of one scene (same people, same room, similar pose):
none of them is a re-crop of another. scripts/measure_recrops.py pairs them up as the hard
negatives, and makes the positives (crops, mirrors, re-encodes, resizes) from them and from the
photos of tests/data/styles. Frames of the two videos are taken two seconds apart. The
optical-flow pairs of opencv-doc (rubberwhale, aero) are left out: their frames differ by a
pixel or two, which makes them duplicates for training rather than different photos.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
from PIL import Image

HERE = Path(__file__).resolve().parent
LONGEST_SIDE = 480
JPEG_QUALITY = 85
EXAMPLES = Path("usr/share/doc/opencv-doc/examples/data")

# group -> files in opencv-doc's examples/data (Debian opencv-doc 4.6.0+dfsg-12)
STILLS = {
    "basketball": ["basketball1.png", "basketball2.png"],
    "chessboard": ["left01.jpg", "left02.jpg", "left07.jpg", "left12.jpg", "right01.jpg"],
    "aloe": ["aloeL.jpg", "aloeR.jpg"],
    "leuven": ["leuvenA.jpg", "leuvenB.jpg"],
    "suzanne": ["Blender_Suzanne1.jpg", "Blender_Suzanne2.jpg"],
}
# group -> (video, frame numbers)
FRAMES = {"pedestrians": ("vtest.avi", [0, 20, 40])}


def save(image: Image.Image, name: str) -> None:
    image = image.convert("L" if image.mode == "L" else "RGB")
    image.thumbnail((LONGEST_SIDE, LONGEST_SIDE), Image.Resampling.LANCZOS)
    image.save(HERE / name, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    print(name, image.size)


def main(root: Path) -> None:
    data = root / EXAMPLES
    for group, files in STILLS.items():
        for file in files:
            save(Image.open(data / file), f"{group}__{Path(file).stem}.jpg")
    for group, (video, frames) in FRAMES.items():
        capture = cv2.VideoCapture(str(data / video))
        for frame_number in frames:
            capture.set(cv2.CAP_PROP_POS_FRAMES, frame_number)
            ok, frame = capture.read()
            if not ok:
                raise SystemExit(f"cannot read frame {frame_number} of {video}")
            rgb = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            save(rgb, f"{group}__frame{frame_number:03d}.jpg")
        capture.release()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
