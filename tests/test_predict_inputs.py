"""predict's inputs: a list file as editors and Windows tools write it is read as meant."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fcn_lightning.predict import list_inputs


def test_a_list_file_with_a_bom_and_crlf_lines_names_its_images(tmp_path):
    for name in ("a.jpg", "b.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeffa.jpg\r\n  b.png \r\n\r\n".encode())
    assert list_inputs(listing) == [tmp_path / "a.jpg", tmp_path / "b.png"]
