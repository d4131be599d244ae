"""Fault hunt of `a2i_jax.inputs`: how user images, attributes and masks are read and checked.

Each test is one finding, its docstring says what happened before ("Was: ..."). All run at the
library's level on files made in `tmp_path`: no subprocess, no model.
"""

import io
import os
import pathlib
import re
import struct
import zlib

import jax
import numpy as np
import pytest
from PIL import Image, ImageFile

from a2i_jax import inputs
from a2i_jax.errors import DataError, InputError

S = 8


def _png(path, size=S, value=90):
  Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
  return path


def test_read_images_takes_a_pathlib_path_in_its_errors_too(tmp_path):
  """Was: `read_images(pathlib.Path(...), S)` of an image of another size (or any file that
  the reader refuses) raised a TypeError ("startswith first arg must be str ... not
  PosixPath") from the handler that words the error, where `read_images` takes a path."""
  small = _png(tmp_path / "small.png", size=4)
  with pytest.raises(InputError, match=r"small.png is 4x4; this model takes 8x8 images"):
    inputs.read_images(small, S)
  with pytest.raises(DataError, match=r"notes.png is not an image PIL can read"):
    (tmp_path / "notes.png").write_text("not an image")
    inputs.read_image(tmp_path / "notes.png", DataError)
  assert inputs.read_images([_png(tmp_path / "ok.png")], S).shape == (1, S, S, 3)


def test_truncated_file_is_refused_where_pil_is_told_to_load_truncated_images(tmp_path,
                                                                              monkeypatch):
  """Was: with `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` set (a notebook following the web's
  common advice for "image file is truncated"; tensorflow_datasets' thumbnails set it for
  good), a truncated PNG or JPEG was read as an intact image, its missing part filled, without
  a word. The reader turns the setting off while it reads, and back on after."""
  monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
  pixels = np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8)
  for fmt in ("PNG", "JPEG"):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match=r"(?i)cut\.\w+ could not be decoded \(.*truncated"):
      inputs.read_image(str(path))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # The caller's setting, as it was.


def test_mpo_photos_are_images(tmp_path, caplog):
  """Was: a camera's multi-picture JPEG (.mpo, which PIL opens through its JPEG opener) was
  refused alone ("is not named as an image ...; rename it") and skipped in a folder as no
  image, although the reader reads it."""
  frames = [Image.new("RGB", (S, S), (200, 10, 10)), Image.new("RGB", (S, S), (10, 200, 10))]
  path = str(tmp_path / "3d.MPO")
  frames[0].save(path, save_all=True, append_images=frames[1:])
  assert inputs.is_image_name(path) and inputs.image_files(path) == [path]
  assert inputs.image_files(str(tmp_path)) == [path] and "skipped" not in caplog.text
  assert inputs.read_images([path], S)[0, 0, 0, 0] > 150  # The first picture, red.


def test_image_formats_pil_cannot_read_are_named_with_the_fix(tmp_path):
  """Was: `--input=photo.heic` (an iPhone's photo) was "not named as an image ...; rename
  it", which makes no HEIC readable, and a folder of them "holds no images" (as SVG, camera
  raw, JPEG XL, ...). Now the format is named, with the fix: convert to PNG or JPEG."""
  heic = tmp_path / "IMG_0001.HEIC"
  heic.write_bytes(b"\x00\x00\x00\x18ftypheic")
  with pytest.raises(InputError, match=r"--input .*IMG_0001.HEIC is a HEIC file, a format PIL "
                     r"cannot read; convert it to PNG or JPEG first\.$"):
    inputs.image_files(str(heic))
  (tmp_path / "logo.svg").write_text("<svg/>")
  with pytest.raises(InputError, match=r"logo.svg is an SVG file"):
    inputs.image_files(str(tmp_path / "logo.svg"))
  with pytest.raises(InputError, match=r"holds no images PIL can read, but 2 HEIC and SVG files "
                     r"\(IMG_0001.HEIC, logo.svg\); convert them to PNG or JPEG first\.$"):
    inputs.image_files(str(tmp_path))
  (tmp_path / "notes.txt").write_text("x")  # Anything else: as before.
  with pytest.raises(InputError, match=r"notes.txt is not named as an image .*; rename it"):
    inputs.image_files(str(tmp_path / "notes.txt"))


def test_input_folder_that_cannot_be_listed_is_one_line(tmp_path, monkeypatch):
  """Was: a folder the user may not list (no read permission: `--input=/data/other_user/`)
  was a PermissionError traceback from `os.listdir`. (Simulated: the tests run as root.)"""
  def refused(path):
    raise PermissionError(13, "Permission denied", path)
  monkeypatch.setattr(inputs.os, "listdir", refused)
  with pytest.raises(InputError, match=r"cannot list --input .* \(Permission denied\); pass a "
                     "folder you can read"):
    inputs.image_files(str(tmp_path))


def test_input_link_to_nothing_is_named_as_such(tmp_path):
  """Was: `--input=latest.png`, a symbolic link whose target was moved, was "does not
  exist", about a file `ls` shows; the reader of a folder's images already named the link."""
  os.symlink(tmp_path / "moved.png", tmp_path / "latest.png")
  with pytest.raises(InputError, match=r"--input .*latest.png is a link to nothing \(.*moved"
                     r"\.png\); fix the link or pass another --input\."):
    inputs.image_files(str(tmp_path / "latest.png"))


def test_attribute_rows_of_other_lengths_are_one_line():
  """Was: `check_attributes([[0, 1], [1]], 2)` (a row missing a value) was NumPy's
  ValueError ("setting an array element with a sequence ... inhomogeneous shape"), raised by
  the test for complex numbers before the check of the values."""
  with pytest.raises(InputError, match=r"attributes is a list of items of different shapes "
                     r"\(\(1,\), \(2,\)\); pass items of one shape"):
    inputs.check_attributes([[0.0, 1.0], [1.0]], 2)


def test_attributes_of_the_wrong_shape_are_named_as_given():
  """Fault hunt: a y_dim=1 model given its N values as a 1-D array was told "attributes have
  shape (1, 3); this model expects [N, 1]", a shape never passed (the check made one row of
  it before it reported), and no fix."""
  with pytest.raises(InputError, match=re.escape(
      "attributes have shape (3,); this model expects [N, 1] (one value per attribute, "
      "y_dim=1); for one value per image pass attributes[:, None], [3, 1].")):
    inputs.check_attributes(np.array([0.0, 1.0, 0.5]), 1)
  with pytest.raises(InputError, match=re.escape("attributes have shape (3,); this model "
                                                 "expects [N, 10] (one value per attribute, "
                                                 "y_dim=10).")):
    inputs.check_attributes([0.0, 1.0, 0.5], 10)
  with pytest.raises(InputError, match=re.escape("attributes have shape (2, 3, 1);")):
    inputs.check_attributes(np.zeros((2, 3, 1)), 3)
  assert inputs.check_attributes([0.5], 1).shape == (1, 1)  # One image's vector: one row.
  assert inputs.check_attributes(np.zeros(3), 3).shape == (1, 3)


@pytest.mark.filterwarnings("error")
def test_non_finite_attributes_are_placed_and_the_fix_named():
  """Was: "attributes contain NaN or infinity." alone: no row, no fix, and the same words for
  a None (a missing value of a table) and for 1e40 (beyond float32, made infinite, with
  NumPy's "overflow encountered in cast" warning besides)."""
  cases = (([[0.5, 0.5], [np.nan, 0.5]], r"1 of 4 values, the first in row 1, attribute 0 "
            r"\(NaN\)"),
           ([[0.5, None]], r"1 of 2 values, the first in row 0, attribute 1 \(None, a "
            r"missing value\)"),
           ([[1e40, -np.inf]], r"2 of 2 values, the first in row 0, attribute 0 \(1e\+40, "
            r"beyond float32's range\)"))
  for attributes, where in cases:
    with pytest.raises(InputError, match=r"attributes contain NaN or infinity: " + where +
                       r"; pass finite numbers, one per attribute of each image\.$"):
      inputs.check_attributes(attributes, 2)


def test_complex_mask_is_refused():
  """Was: a complex mask (an FFT's output, say) was taken with NumPy's ComplexWarning and
  its imaginary part dropped; complex attributes were already refused."""
  with pytest.raises(InputError, match=r"observed holds complex numbers; pass bool, floats in "
                     r"\[0, 1\] or uint8"):
    inputs.check_mask(np.ones((S, S), complex), 1, S, "observed")


def test_an_image_smaller_than_the_model_is_told_to_resize_not_crop(tmp_path):
  """Was: a 4x4 (or 4x16) image for an 8x8 model was told to "Crop or resize it to 8x8",
  and no crop makes an image larger. A larger one still hears both."""
  for size, fix in (((4, 4), "Resize it"), ((4, 16), "Resize it"),
                    ((16, 16), "Crop or resize it")):
    path = str(tmp_path / f"{size[0]}x{size[1]}.png")
    Image.new("RGB", size).save(path)
    with pytest.raises(InputError, match=rf"is {size[0]}x{size[1]}; this model takes 8x8 "
                       rf"images\. {fix} to 8x8 first\.$"):
      inputs.read_image(path, size=S)


def test_a_file_name_with_a_line_break_stays_one_line(tmp_path):
  """Was: a file named "a<newline>b.png" that could not be read (or a folder's skipped
  entry so named) split the one `error:` line in two. Such names are shown quoted, with
  escapes."""
  bad = tmp_path / "broken\nphoto.png"
  bad.write_text("not an image")
  with pytest.raises(InputError) as refused:
    inputs.read_image(str(bad))
  assert "\n" not in str(refused.value) and r"broken\nphoto.png" in str(refused.value)
  assert inputs.read_image(pathlib.Path(_png(tmp_path / "café.png"))).shape == (S, S, 3)


def _keyed_png(path, width, bits, colour, key, idat, interlace=0):
  """A one-row PNG (of IHDR colour type `colour`) with a transparent colour: `key`, the tRNS
  chunk's bytes; `idat`, the filtered rows uncompressed. Written byte by byte: PIL writes
  none such."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  ihdr = struct.pack(">IIBBBBB", width, 1, bits, colour, 0, 0, interlace)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tRNS", key)
                   + chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b""))
  return str(path)


def _grey_png(path, bits, row, key):
  """A one-row grey PNG of bit depth `bits` whose grey `key` (of 0 .. 2^bits - 1) is
  transparent."""
  return _keyed_png(path, 4, bits, 0, struct.pack(">H", key), b"\x00" + bytes(row))


def test_transparent_grey_of_low_bit_pngs_is_black(tmp_path):
  """Was: the transparent grey of a 1-, 2- or 4-bit grey PNG was kept as it is (white, grey)
  instead of black, the rule for every other transparent pixel: mode "1" was left out of the
  composite, and PIL keeps a 2- or 4-bit file's own key (3 of 0..3), which matched none of
  the 8-bit pixels it reads (255)."""
  cases = ((1, [0b10100000], 1, [0, 0, 0, 0]),  # Pixels 1, 0, 1, 0; 1 (white) transparent.
           (2, [0b11010010], 3, [0, 85, 0, 170]),  # 3, 1, 0, 2 of 0..3.
           (4, [0xF5, 0x0A], 15, [0, 85, 0, 170]),  # 15, 5, 0, 10 of 0..15.
           (4, [0xF5, 0x0A], 5, [255, 0, 0, 170]))
  for bits, row, key, grey in cases:
    got = inputs.read_image(_grey_png(tmp_path / f"g{bits}_{key}.png", bits, row, key))
    assert got[..., 0].tolist() == [grey] and (got == got[..., :1]).all(), (bits, key)


def test_transparent_colour_of_16_bit_rgb_pngs_is_black(tmp_path):
  """Was: of a 16-bit RGB PNG with a transparent colour (a tRNS key), PIL compared the 16-bit
  key with the pixels cut to 8 bits: the keyed pixels were kept (their colour), and opaque
  ones that shared the key's high bytes turned black. Plain and interlaced (Adam7) rows."""
  key = (0x1234, 0x5678, 0x9ABC)  # No sample a multiple of 257: its low bytes matter.
  near = [(0x1235, 0x5678, 0x9ABC), (0x1234, 0x5600, 0x9ABC), (0x12FF, 0x56FF, 0x9AFF)]
  pixels = [key, *near, (0, 0xFFFF, 0x0101), key]
  px = lambda *p: b"".join(struct.pack(">HHH", *q) for q in p)
  # Adam7 of one row of 6: passes 1, 2, 4 and 6 take pixels 0; 4; 2; 1, 3, 5 (3, 5, 7: none).
  rows = {0: b"\x00" + px(*pixels),
          1: b"".join(b"\x00" + px(*(pixels[i] for i in cols))
                      for cols in ((0,), (4,), (2,), (1, 3, 5)))}
  shared = [0x12, 0x56, 0x9A]  # The key's high bytes, which PIL keeps of each sample.
  want = [[0, 0, 0], shared, shared, shared, [0, 255, 1], [0, 0, 0]]
  for interlace, idat in rows.items():
    got = inputs.read_image(_keyed_png(tmp_path / f"rgb16_{interlace}.png", len(pixels), 16,
                                       2, px(key), idat, interlace))
    assert got.shape == (1, len(pixels), 3) and got[0].tolist() == want, interlace


def test_photoshop_files_are_read(tmp_path):
  """Was: every PSD (a Photoshop file, an extension the reader takes) was "could not be
  decoded (EOFError: attempt to seek outside sequence); the file is damaged", from a seek to
  frame 0 where PIL counts a PSD's frames from 1. Its merged image is read."""
  h = w = S
  rgb = np.zeros((h, w, 3), np.uint8)
  rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
  path = tmp_path / "drawing.psd"  # The smallest PSD: RGB, 8 bits, no layers, raw planes.
  path.write_bytes(b"8BPS" + struct.pack(">H", 1) + b"\0" * 6
                   + struct.pack(">HIIHH", 3, h, w, 8, 3) + struct.pack(">I", 0) * 3
                   + struct.pack(">H", 0) + np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes())
  assert inputs.is_image_name(str(path))
  np.testing.assert_array_equal(inputs.read_images([str(path)], S)[0], rgb)


def test_output_folder_with_a_name_too_long_is_refused_before_any_work(tmp_path):
  """Was: `--out` naming a folder over the file system's 255 bytes passed the check made
  before the restore, to stop after it with "could not write ... (File name too long); free
  some space", when the folder was made."""
  for out in (tmp_path / ("x" * 300), tmp_path / "new" / ("é" * 130) / "out"):
    with pytest.raises(InputError, match=r"--out .*: the folder name .*\.\.\. is (300|260) "
                       r"bytes long, over the 255 this file system allows; pass a shorter --out"):
      inputs.check_output_folder(str(out))
  inputs.check_output_folder(str(tmp_path / ("x" * 255) / "out"))
  assert os.listdir(tmp_path) == []  # Checked, nothing made.


def test_pil_images_of_any_mode_are_read_as_their_colours():
  """Was: a PIL image passed as images went through NumPy's view of its mode: a palette
  image's indices were called "one grey image", with a fix (repeat the grey) that makes
  them a wrong picture, and `to_unit` returned the indices / 255; YCbCr (or LAB, HSV) was
  taken as RGB, CMYK called RGBA. They are converted as image files are."""
  palette = Image.new("P", (S, S))
  palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
  palette.putdata([1] * (S * S))
  want = np.array([200, 100, 50]) / 127.5 - 1
  np.testing.assert_allclose(inputs.check_images(palette, S)[0, 0, 0], want, atol=1e-6)
  np.testing.assert_allclose(inputs.check_images([palette] * 2, S)[:, 3, 3], [want] * 2,
                             atol=1e-6)
  np.testing.assert_allclose(inputs.to_unit(palette)[0, 0], [200 / 255, 100 / 255, 50 / 255])
  red = Image.new("RGB", (S, S), (255, 0, 0))
  for mode in ("YCbCr", "CMYK", "HSV"):
    np.testing.assert_allclose(inputs.check_images(red.convert(mode), S)[0, 0, 0], [1, -1, -1],
                               atol=0.02, err_msg=mode)
  assert inputs.to_unit(Image.new("L", (2, 2), 255)).shape == (2, 2)  # As NumPy reads it.


def test_shown_size_of_a_turned_tiff_is_the_size_it_is_read_at(tmp_path):
  """Was: of a TIFF whose orientation turns it a quarter, `shown_size` gave the stored size:
  PIL (recent versions) reports a TIFF's size as shown already, and it was turned again. So an
  8 x 16 image was called 16x8, and a folder dataset refused it beside its mask (`folder`
  compares their `shown_size`) although both read at the same size."""
  exif = Image.Exif()
  exif[0x0112] = 6  # A quarter turn: stored 16 wide, 8 high; shown 8 wide, 16 high.
  for ext in ("tif", "png", "jpg"):
    path = str(tmp_path / f"turned.{ext}")
    Image.new("RGB", (16, 8), (9, 9, 9)).save(path, exif=exif)
    with Image.open(path) as im:
      assert inputs.shown_size(im) == (8, 16), ext
    assert inputs.read_image(path).shape == (16, 8, 3), ext
    with pytest.raises(InputError, match=r"turned\.\w+ is 8x16; this model takes 8x8"):
      inputs.read_image(path, size=S)


def test_a_video_among_the_photos_is_skipped_not_called_damaged(tmp_path, caplog):
  """Was: an MPEG clip (.mpg, whose header PIL identifies but has no decoder for) was taken
  for an image, and stopped a folder of photos with "clip.mpg could not be decoded ...; the
  file is damaged or incomplete", of an intact file. It is skipped with the other entries
  that are no images, and given alone, named as a video (as .mp4 or .mov, which were "not
  named as an image ...; rename it")."""
  clip = tmp_path / "clip.mpg"  # An MPEG-1 sequence header: 8 x 8.
  clip.write_bytes(b"\x00\x00\x01\xb3\x00\x80\x08\x13\xff\xff\xe0\x18" + b"\0" * 64)
  photo = _png(tmp_path / "photo.png")
  assert inputs.image_files(str(tmp_path)) == [str(photo)] and "clip.mpg" in caplog.text
  (tmp_path / "holiday.MP4").write_bytes(b"\0\0\0\x18ftypmp42")
  for name in ("clip.mpg", "holiday.MP4"):
    with pytest.raises(InputError, match=r"is an (MPEG|MP4) video file, a format PIL cannot "
                       "read; save the frame you want as PNG or JPEG first"):
      inputs.image_files(str(tmp_path / name))


def test_uint8_images_of_zeros_and_ones_are_refused_as_masks_are():
  """Was: images in [0, 1] cast with .astype(np.uint8) (every value below 1 cut to 0, so 0s
  and 1s) taken by check_images, and by to_unit, to_signed and to_uint8, as the black images
  they read as (a review's finding); uint8 masks of 0s and 1s were refused already. A black
  image (all zeros) is one, and taken."""
  unit = np.random.default_rng(0).random((2, S, S, 3))
  unit[0, 0, 0] = 1.0
  slip = unit.astype(np.uint8)
  fix = re.escape("uint8 whose brightest value is 1 (of 255), so they would read as black: "
                  "floats in [0, 1] cast with .astype(np.uint8)? Pass (x * 255).round()"
                  ".astype(np.uint8) of those floats, or the floats in [0, 1] as they are.")
  with pytest.raises(InputError, match="^images are " + fix):
    inputs.check_images(slip, S)
  for convert in (inputs.to_unit, inputs.to_signed, inputs.to_uint8):
    with pytest.raises(InputError, match=f"^{convert.__name__} takes uint8 in .*; these are "
                       + fix):
      convert(slip)
  with pytest.raises(InputError, match="these are uint8 whose brightest value is 1"):
    inputs.to_unit(jax.numpy.asarray(slip))
  black = np.zeros((2, S, S, 3), np.uint8)
  np.testing.assert_array_equal(inputs.check_images(black, S), -1.0)
  np.testing.assert_array_equal(inputs.to_unit(black), 0.0)
  # The fix named reads as the floats do; under `jit` only the dtype is checked.
  np.testing.assert_allclose(inputs.check_images((unit * 255).round().astype(np.uint8), S),
                             inputs.check_images(unit, S), atol=1 / 255)
  assert jax.jit(inputs.to_unit)(slip).dtype == np.float32


@pytest.mark.parametrize("shape, words", [
    ((3, 1, S, S, 3), "a list of 3 batches of 1 image? Join them into one batch: "
                      "np.concatenate(images)"),
    ((1, 3, S, S, 3), "one batch of 3 images in a list? Pass images[0], or "
                      "np.concatenate(images)"),
])
def test_a_list_of_batches_is_told_to_concatenate_not_resize(shape, words):
  """Was: images given as a list of one-image batches ([1, S, S, 3] each, as a loop that
  appends batches makes) refused with "resize or crop to SxS", images of that size already
  (a review's finding); batches of other sizes (the last one smaller) as "a list of items of
  different shapes", no fix."""
  x = np.zeros(shape, np.uint8)
  with pytest.raises(InputError, match=re.escape(f"images have shape {shape}; this model "
                                                 f"expects [N, {S}, {S}, 3] RGB ({words}")):
    inputs.check_images(list(x) if shape[0] > 1 else x, S)
  with pytest.raises(InputError, match=re.escape(
      f"images are a list of 2 batches of {S}x{S} RGB images of different sizes (2, 1 "
      "images); join them into one batch: np.concatenate(images).")):
    inputs.check_images([np.zeros((2, S, S, 3)), np.zeros((1, S, S, 3))], S)
  assert inputs.check_images(np.concatenate(list(x)), S).shape == (3, S, S, 3)


def test_16_bit_files_of_10_or_12_bit_values_are_refused(tmp_path):
  """Was: a 16-bit PNG or TIFF holding 10- or 12-bit data (brightest 1023 or 4095 of
  65535, as cameras, scanners and medical images save them) read nearly black (at most 16
  of 255) without a word, where values within 0..255 were refused. Refused alike now,
  naming the fix; a 16-bit image that reaches beyond 4095 reads as before."""
  for value, suffix, words in ((4095, "png", "at most 16 of 255"),
                               (1023, "tif", "at most 4 of 255")):
    path = tmp_path / f"narrow.{suffix}"
    Image.fromarray(np.full((S, S), value, np.uint16)).save(path)
    with pytest.raises(InputError, match=re.escape(
        f"image whose values all lie in 0..{value} (of 0..65535) would read nearly black "
        f"({words}); if they are 10- or 12-bit values (a camera's or scanner's, in a 16-bit "
        "file), scale them to 16 bits (by 64 or 16) or save it as an 8-bit image.")):
      inputs.read_image(str(path))
  wide = tmp_path / "wide.png"
  Image.fromarray(np.full((S, S), 4096, np.uint16)).save(wide)
  assert inputs.read_image(str(wide)).max() == 16


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_turned_uncompressed_tiffs_are_read_as_shown(tmp_path, mode):
  """Was: an uncompressed TIFF of these modes whose EXIF orientation turns it a quarter (and
  that is not square) was read scrambled at its stored size, without a word: PIL, opening it
  by path, memory-maps the pixels at the size as shown (a Pillow fault). Opened from a file
  object, it is read right: pixels as shown."""
  shown = np.zeros((6, 10), np.uint8)
  shown[:3, :4] = 255  # A white block at the top left, as shown.
  src = (Image.fromarray(shown.astype(np.uint16) * 257) if mode == "I;16"
         else Image.fromarray(shown).convert(mode))
  exif = Image.Exif()
  exif[0x0112] = 6
  path = str(tmp_path / "turned.tif")
  src.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
  got = inputs.read_image(path)
  assert got.shape == (6, 10, 3)
  np.testing.assert_array_equal(got[..., 0] > 127, shown > 127)


def test_an_image_decoded_at_another_size_than_shown_is_refused(tmp_path, monkeypatch):
  """A safety net for misreads like PIL's of turned TIFFs: an image whose EXIF orientation
  turns it a quarter and that decodes (turned) at another size than its header shows is
  refused by name, not read at the wrong size."""
  exif = Image.Exif()
  exif[0x0112] = 6
  path = str(tmp_path / "turned.png")
  Image.new("RGB", (16, 8), (9, 9, 9)).save(path, exif=exif)
  assert inputs.read_image(path).shape == (16, 8, 3)
  monkeypatch.setattr(inputs.ImageOps, "exif_transpose", lambda im, **kw: im.copy())
  with pytest.raises(DataError, match=re.escape(
      f"{path} decoded as 16x8, but its header says 8x16 (turned by its EXIF orientation), "
      "so PIL misread it; save it upright as a PNG") + ".*\\)\\.$"):
    inputs.read_image(path, DataError)
