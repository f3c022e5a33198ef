"""DICOM reading as the standard defines it: the VOI LUT matrix (US/OW LUT Data, 8/12/16-bit entries,
first mapped value, byte orders), windows, polarity, presentation intent, preamble-less files,
decoder messages, `write_dicom`'s argument errors, and a walk over pydicom's bundled test files."""
import warnings
from pathlib import Path
import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels import apply_voi
from PIL import Image
from mcal.core import MCalError, DicomError, ImageFileError
from mcal import dicom as mdicom
from mcal.dicom import read_dicom, read_mammogram, read_lut, apply_lut, looks_like_dicom, dicom_presentation_intent
from mcal.dicom_write import write_dicom, voi_lut_item, DicomWriteError

STORED = np.tile(np.arange(0, 4096, 13, dtype=np.uint16), (3, 1))   # a 12-bit ramp, 3 rows


def sqrt_lut(n_entries, bits):
    "A LUT that is a known function: a square-root curve from 0 to 2**bits - 1 over its entries."
    return np.round((2 ** bits - 1) * np.sqrt(np.arange(n_entries) / (n_entries - 1))).astype(np.int64)


def expected_image(modality, lut, first_mapped, bits):
    "What the standard says the LUT gives, computed without mcal: index, clip, look up, scale by 2**bits - 1."
    index = np.clip(np.rint(modality).astype(np.int64) - first_mapped, 0, len(lut) - 1)
    return lut[index] / (2 ** bits - 1)


def resave(path, out, transfer_syntax):
    "Copy an uncompressed explicit-VR-LE file into another native transfer syntax, swapping bytes for big endian."
    ds = pydicom.dcmread(path)
    big = transfer_syntax == uid.ExplicitVRBigEndian
    if big:
        dtype = '<u2' if ds.BitsAllocated == 16 else 'u1'
        ds.PixelData = np.frombuffer(ds.PixelData, dtype).astype(dtype.replace('<', '>')).tobytes()
        for item in ds.get('VOILUTSequence', []):
            if item['LUTData'].VR == 'OW': item.LUTData = np.frombuffer(item.LUTData, '<u2').astype('>u2').tobytes()
    fresh = pydicom.Dataset(); fresh.update(ds)               # no original encoding: pydicom lets it change byte order
    fresh.file_meta = ds.file_meta; fresh.file_meta.TransferSyntaxUID = transfer_syntax
    fresh.save_as(out, enforce_file_format=True)
    return Path(out)


# --- the VOI LUT matrix ---------------------------------------------------------------------------

@pytest.mark.parametrize('vr', ['US', 'OW'])
@pytest.mark.parametrize('bits', [8, 12, 16])
@pytest.mark.parametrize('first_mapped', [0, 700])
@pytest.mark.parametrize('transfer_syntax', [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian,
                                             uid.ExplicitVRBigEndian, uid.RLELossless])
def test_voi_lut_matrix(tmp_path, vr, bits, first_mapped, transfer_syntax):
    lut = sqrt_lut(3000, bits)
    kw = dict(voi_lut=lut, voi_lut_first_mapped=first_mapped, voi_lut_bits=bits, voi_lut_vr=vr)
    p = write_dicom(STORED, tmp_path / 'lut.dcm', compress='rle' if transfer_syntax == uid.RLELossless else None, **kw)
    if transfer_syntax in (uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian): p = resave(p, tmp_path / 'lut2.dcm', transfer_syntax)
    ds = pydicom.dcmread(p)
    assert ds.file_meta.TransferSyntaxUID == transfer_syntax
    assert list(ds.VOILUTSequence[0].LUTDescriptor) == [3000, first_mapped, bits]
    if transfer_syntax != uid.ImplicitVRLittleEndian: assert ds.VOILUTSequence[0]['LUTData'].VR == vr
    m = read_dicom(p)
    np.testing.assert_allclose(m.image[0], expected_image(STORED[0], lut, first_mapped, bits), atol=1e-6)
    assert m.image.min() == 0 and m.image.max() == 1


@pytest.mark.parametrize('vr', ['US', 'OW'])
def test_voi_lut_agrees_with_pydicom_where_pydicom_is_right(tmp_path, vr):
    lut = sqrt_lut(2048, 16)
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', voi_lut=lut, voi_lut_first_mapped=1000, voi_lut_vr=vr))
    entries, first, bits = read_lut(ds.VOILUTSequence[0], ds)
    np.testing.assert_array_equal(apply_lut(STORED, entries, first), apply_voi(STORED, ds))
    assert bits == 16


def test_8bit_lut_longer_than_256_entries(tmp_path):
    "A 12-bit input through an 8-bit display curve: pydicom's apply_voi wraps its index at 256, mcal does not."
    lut = np.arange(4096) // 16
    p = write_dicom(STORED, tmp_path / 'eight.dcm', voi_lut=lut, voi_lut_bits=8)
    np.testing.assert_allclose(read_dicom(p).image[0], (STORED[0] // 16) / 255, atol=1e-6)


@pytest.mark.parametrize('vr', ['US', 'OW'])
def test_8bit_lut_packed_two_entries_per_word(tmp_path, vr):
    "CP 522: 8-bit entries packed two to a 16-bit word; told apart from one-per-word by the data's length."
    lut = sqrt_lut(4095, 8)                          # odd count: the last word is half used
    packed = np.append(lut, 0).astype(np.uint8).tobytes()
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', voi_lut=lut, voi_lut_bits=8))
    item = ds.VOILUTSequence[0]
    if vr == 'OW': item.add_new(0x00283006, 'OW', packed)
    else: item.add_new(0x00283006, 'US', [int(w) for w in np.frombuffer(packed, '<u2')])
    assert len(item.LUTData) == (2048 if vr == 'US' else 4096)
    ds.save_as(tmp_path / 'packed.dcm')
    np.testing.assert_allclose(read_dicom(tmp_path / 'packed.dcm').image[0], expected_image(STORED[0], lut, 0, 8), atol=1e-6)


def test_lut_of_65536_entries(tmp_path):
    "A descriptor's entry count of 0 means 2**16 entries."
    lut = 65535 - np.arange(2 ** 16)
    p = write_dicom(STORED, tmp_path / 'full.dcm', voi_lut=lut, voi_lut_vr='OW')
    assert pydicom.dcmread(p).VOILUTSequence[0].LUTDescriptor[0] == 0
    np.testing.assert_allclose(read_dicom(p).image[0], 1 - STORED[0] / 65535, atol=1e-6)


def test_lut_range_is_the_descriptors_not_the_data(tmp_path):
    "A 16-bit table whose entries stop at 4095 gives a dark image: output range 0..2**16-1, as the standard says."
    lut = np.arange(4096)
    m = read_dicom(write_dicom(STORED, tmp_path / 'dark.dcm', voi_lut=lut, voi_lut_bits=16))
    np.testing.assert_allclose(m.image[0], STORED[0] / 65535, atol=1e-6)


def test_lut_descriptor_that_understates_its_data(tmp_path):
    "A descriptor claiming 12 bits over 16-bit data: mcal widens the range rather than overflow [0, 1]."
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', voi_lut=np.arange(4096) * 16))
    ds.VOILUTSequence[0].LUTDescriptor = [4096, 0, 12]
    ds.save_as(tmp_path / 'under.dcm')
    np.testing.assert_allclose(read_dicom(tmp_path / 'under.dcm').image[0], STORED[0] * 16 / 65535, atol=1e-6)


@pytest.mark.parametrize('slope, intercept', [(1, 0), (0.5, 300), (1.5, -200), (0.37, 12.5)])
def test_lut_after_rescale_indexes_rounded_values(tmp_path, slope, intercept):
    lut = sqrt_lut(5000, 12)
    p = write_dicom(STORED, tmp_path / 'r.dcm', voi_lut=lut, voi_lut_first_mapped=100, rescale=(slope, intercept))
    with warnings.catch_warnings():
        warnings.simplefilter('error')                       # no "VOI LUT on a float input" warning
        m = read_dicom(p)
    modality = STORED[0] * slope + intercept
    np.testing.assert_allclose(m.image[0], expected_image(modality, lut, 100, 12), atol=1e-6)


@pytest.mark.parametrize('transfer_syntax', [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian])
def test_signed_first_mapped_value(tmp_path, transfer_syntax):
    "Rescale intercept -1024 (CT-like): the VOI LUT starts at -1024, SS in the file; implicit VR reads it as US 64512."
    lut = sqrt_lut(4096, 12)
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', voi_lut=lut, rescale=(1, -1024)))
    ds.VOILUTSequence[0].add_new(0x00283002, 'SS', [4096, -1024, 12])
    ds.save_as(tmp_path / 'ss.dcm')
    p = resave(tmp_path / 'ss.dcm', tmp_path / 'ss2.dcm', transfer_syntax)
    np.testing.assert_allclose(read_dicom(p).image[0], expected_image(STORED[0] - 1024.0, lut, -1024, 12), atol=1e-6)


def test_modality_lut_sequence_of_12_bit_entries(tmp_path):
    "A Modality LUT Sequence (pydicom's apply_modality_lut cannot make a 'uint12' array) followed by a window."
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', window=(1024, 1024)))
    item = voi_lut_item(np.arange(4096) // 2, bits=12)
    ds.ModalityLUTSequence = [item]
    ds.save_as(tmp_path / 'mlut.dcm')
    modality = STORED[0] // 2
    expected = np.clip((modality - (1024 - 0.5)) / (1024 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(read_dicom(tmp_path / 'mlut.dcm').image[0], expected, atol=1e-6)


def test_lut_data_shorter_than_descriptor_is_refused(tmp_path):
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', voi_lut=np.arange(4096)))
    ds.VOILUTSequence[0].LUTDescriptor = [8192, 0, 12]
    ds.save_as(tmp_path / 'short.dcm')
    with pytest.raises(DicomError, match=r"short.dcm: invalid VOI.*4096 entries.*8192.*voi='robust'"):
        read_dicom(tmp_path / 'short.dcm')
    assert read_dicom(tmp_path / 'short.dcm', voi='robust').image.max() == 1


# --- windows and polarity ---------------------------------------------------------------------------

@pytest.mark.parametrize('function', ['LINEAR', 'LINEAR_EXACT', 'SIGMOID'])
@pytest.mark.parametrize('rescale', [None, (2, -100), (-1, 4095)])
def test_window_functions(tmp_path, function, rescale):
    "PS3.3 C.11.2.1.2-3 window formulas, scaled by pydicom's output range, against the formulas written here."
    centre, width = 2000, 800
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', window=(centre, width), rescale=rescale))
    ds.VOILUTFunction = function
    ds.save_as(tmp_path / 'w.dcm')
    x = STORED[0].astype(np.float64) * (rescale or (1, 0))[0] + (rescale or (1, 0))[1]
    if function == 'LINEAR': y = np.clip((x - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)
    elif function == 'LINEAR_EXACT': y = np.clip((x - centre) / width + 0.5, 0, 1)
    else: y = 1 / (1 + np.exp(-4 * (x - centre) / width))
    np.testing.assert_allclose(read_dicom(tmp_path / 'w.dcm').image[0], y, atol=1e-5)


def test_invalid_window_is_refused_with_the_way_out(tmp_path):
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', window=(2000, 800)))
    ds.WindowWidth = 0
    ds.save_as(tmp_path / 'w0.dcm')
    with pytest.raises(DicomError, match=r"w0.dcm: invalid VOI.*Window Width.*voi='robust'"): read_dicom(tmp_path / 'w0.dcm')


@pytest.mark.parametrize('photometric, shape, inverted', [
    ('MONOCHROME2', None, False), ('MONOCHROME2', 'IDENTITY', False), ('MONOCHROME2', 'INVERSE', True),
    ('MONOCHROME1', None, True), ('MONOCHROME1', 'INVERSE', True), ('MONOCHROME1', 'IDENTITY', True)])
def test_polarity_inverts_once(tmp_path, photometric, shape, inverted):
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', photometric=photometric, window=(2048, 4096)))
    if shape is None: del ds.PresentationLUTShape
    else: ds.PresentationLUTShape = shape
    ds.save_as(tmp_path / 'pol.dcm')
    image = read_dicom(tmp_path / 'pol.dcm').image[0]
    assert (image[0] > image[-1]) == inverted


# --- presentation intent ----------------------------------------------------------------------------

@pytest.mark.parametrize('intent, sop_class', [
    ('FOR PRESENTATION', uid.DigitalMammographyXRayImageStorageForPresentation),
    ('FOR PROCESSING', uid.DigitalMammographyXRayImageStorageForProcessing)])
def test_presentation_intent_written_and_read(tmp_path, intent, sop_class):
    p = write_dicom(STORED, tmp_path / 'a.dcm', presentation_intent=intent)
    ds = pydicom.dcmread(p)
    assert (ds.SOPClassUID, ds.file_meta.MediaStorageSOPClassUID, ds.PresentationIntentType) == (sop_class, sop_class, intent)
    assert ('PresentationLUTShape' in ds) == (intent == 'FOR PRESENTATION')
    assert read_dicom(p).presentation_intent == intent
    del ds.PresentationIntentType                         # only the SOP class says it now
    ds.save_as(tmp_path / 'b.dcm')
    assert read_dicom(tmp_path / 'b.dcm').presentation_intent == intent


def test_presentation_intent_unknown(tmp_path):
    Image.fromarray((STORED // 16).astype(np.uint8)).save(tmp_path / 'a.png')
    assert read_mammogram(tmp_path / 'a.png').presentation_intent is None
    ds = pydicom.Dataset(); ds.SOPClassUID = uid.CTImageStorage
    assert dicom_presentation_intent(ds) is None


# --- files without the preamble ---------------------------------------------------------------------

@pytest.mark.parametrize('name', ['nopre.dcm', 'IM000001', 'scan.img', 'scan.DICOM'])
def test_file_meta_without_preamble(tmp_path, name):
    p = write_dicom(STORED, tmp_path / 'a.dcm', window=(2000, 1000))
    (tmp_path / name).write_bytes(p.read_bytes()[132:])
    assert looks_like_dicom(tmp_path / name)
    m = read_mammogram(tmp_path / name)
    np.testing.assert_array_equal(m.image, read_dicom(p).image)
    assert m.transfer_syntax == 'Explicit VR Little Endian'


@pytest.mark.parametrize('implicit, little', [(True, True), (False, True), (False, False)])
def test_dataset_without_file_meta(tmp_path, implicit, little):
    "No preamble, no file meta: the transfer syntax is the encoding pydicom detects."
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm', bits_stored=12, window=(2000, 1000)))
    if not little: ds.PixelData = np.frombuffer(ds.PixelData, '<u2').astype('>u2').tobytes()
    fp = DicomBytesIO(); fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    (tmp_path / 'raw').write_bytes(fp.getvalue())
    m = read_mammogram(tmp_path / 'raw')
    np.testing.assert_array_equal(m.image, read_dicom(tmp_path / 'a.dcm').image)
    assert m.transfer_syntax == {(True, True): 'Implicit VR Little Endian', (False, True): 'Explicit VR Little Endian',
                                 (False, False): 'Explicit VR Big Endian'}[(implicit, little)]


def test_text_is_not_dicom(tmp_path):
    (tmp_path / 'notes.dcm').write_text('Findings: none. ' * 50)
    (tmp_path / 'notes').write_text('Findings: none. ' * 50)
    with pytest.raises(DicomError, match='notes.dcm: not a DICOM file'): read_mammogram(tmp_path / 'notes.dcm')
    with pytest.raises(ImageFileError, match='notes: neither DICOM nor a known image type'): read_mammogram(tmp_path / 'notes')


# --- decoder failures keep pydicom's explanation ----------------------------------------------------

def test_missing_plugin_message_keeps_pydicoms_text(tmp_path, monkeypatch):
    from pydicom.pixels.decoders.base import get_decoder
    write_dicom(np.arange(48 * 40, dtype=np.uint16).reshape(48, 40), tmp_path / 'j2k.dcm', compress='jpeg2000')
    monkeypatch.setattr(get_decoder(uid.JPEG2000Lossless), '_available', {})    # as if pylibjpeg were not installed
    with pytest.raises(DicomError) as e: read_dicom(tmp_path / 'j2k.dcm')
    msg = str(e.value)
    assert msg.startswith(f'{tmp_path / "j2k.dcm"}: cannot decode transfer syntax JPEG 2000')
    assert 'all plugins are missing dependencies' in msg              # pydicom's words
    assert 'install pylibjpeg + pylibjpeg-openjpeg' in msg            # mcal's hint


def test_failing_decoder_is_not_blamed_on_a_missing_plugin():
    p = Path(pydicom.__file__).parent / 'data' / 'test_files' / 'JPEG2000-embedded-sequence-delimiter.dcm'
    if not p.exists(): pytest.skip('pydicom test file missing')
    with pytest.raises(DicomError, match='exceptions were raised by all available plugins.*installed decoders ran and failed'):
        read_dicom(p)


def test_unexpected_error_names_the_file(tmp_path, monkeypatch):
    p = write_dicom(STORED, tmp_path / 'a.dcm')
    monkeypatch.setattr(mdicom, '_pixel_spacing', lambda ds: {}['boom'])
    with pytest.raises(DicomError, match=r"a.dcm: pydicom cannot interpret this file \(KeyError"): read_dicom(p)


# --- more shapes of pixel data --------------------------------------------------------------------

def test_float_pixel_data(tmp_path):
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm'))
    values = STORED.astype(np.float32) / 7
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32; ds.FloatPixelData = values.tobytes()
    ds.save_as(tmp_path / 'float.dcm')
    m = read_dicom(tmp_path / 'float.dcm')
    assert m.image.dtype == np.float32 and m.image.min() == 0 and m.image.max() == 1
    values[0, 0] = np.nan; ds.FloatPixelData = values.tobytes(); ds.save_as(tmp_path / 'nan.dcm')
    with pytest.raises(DicomError, match='nan.dcm: float pixel data with NaN'): read_dicom(tmp_path / 'nan.dcm')


def test_multiframe_is_refused(tmp_path):
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm'))
    ds.NumberOfFrames = 2; ds.PixelData = ds.PixelData * 2
    ds.save_as(tmp_path / 'two.dcm')
    with pytest.raises(DicomError, match='two.dcm: 2 frames'): read_dicom(tmp_path / 'two.dcm')


def test_missing_pixel_description_is_refused(tmp_path):
    ds = pydicom.dcmread(write_dicom(STORED, tmp_path / 'a.dcm'))
    del ds.BitsAllocated
    ds.save_as(tmp_path / 'nobits.dcm')
    with pytest.raises(DicomError, match=r'nobits.dcm: pixel data without their description \(missing BitsAllocated\)'):
        read_dicom(tmp_path / 'nobits.dcm')


# --- write_dicom's argument errors ------------------------------------------------------------------

@pytest.mark.parametrize('pixels, kwargs, why', [
    (STORED.astype(np.int16), {}, 'unsigned integer'),
    (STORED[0], {}, '2-D'),
    (STORED, dict(bits_stored=8), 'exceed 8 bits'),
    (STORED, dict(bits_stored=17), 'bits_stored must be 1-16'),
    (STORED, dict(photometric='RGB'), 'photometric'),
    (STORED, dict(window=(100, 0)), 'window width'),
    (STORED, dict(compress='jpegxl'), 'unknown compression'),
    (STORED, dict(presentation_intent='RAW'), 'presentation_intent'),
    (STORED, dict(voi_lut=np.arange(300), voi_lut_bits=8), 'exceed 8 bits'),
    (STORED, dict(voi_lut=np.arange(300), voi_lut_bits=9), '8 or 10-16 bits'),
    (STORED, dict(voi_lut=np.arange(300), voi_lut_vr='OB'), "'US' or 'OW'"),
    (STORED, dict(voi_lut=np.arange(300), voi_lut_first_mapped=-5), 'first mapped'),
    (STORED, dict(voi_lut=np.linspace(0, 1, 30)), 'non-negative integers'),
    (STORED, dict(voi_lut=np.arange(2 ** 16 + 1)), '1 to 65536 entries'),
])
def test_write_dicom_argument_errors(tmp_path, pixels, kwargs, why):
    with pytest.raises(DicomWriteError, match=f'bad.dcm: cannot write DICOM: .*{why}') as e:
        write_dicom(pixels, tmp_path / 'bad.dcm', **kwargs)
    assert isinstance(e.value, MCalError) and isinstance(e.value, ValueError)
    assert not (tmp_path / 'bad.dcm').exists()


# --- pydicom's own test corpus ----------------------------------------------------------------------

PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / 'data' / 'test_files'


def test_pydicom_corpus_is_read_or_refused_clearly():
    "Every file pydicom ships for its tests: a 2-D float32 image in [0, 1], or an MCalError naming the file."
    files = sorted(f for f in PYDICOM_TEST_FILES.rglob('*') if f.is_file())
    if not files: pytest.skip(f'no pydicom test files under {PYDICOM_TEST_FILES}')
    read, refused, wrong = [], [], []
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try: m = read_mammogram(f)
            except MCalError as e:
                (refused if f.name in str(e) else wrong).append((f.name, str(e))); continue
            except Exception as e: wrong.append((f.name, f'{type(e).__name__}: {e}')); continue
        img = m.image
        ok = img.ndim == 2 and img.dtype == np.float32 and np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
        (read if ok else wrong).append((f.name, 'image'))
    assert not wrong, wrong
    assert len(read) + len(refused) == len(files)
    assert len(read) >= 40 and len(refused) >= 100          # 53 and 123 with pydicom 3.0.2's corpus
    reasons = ' '.join(msg for _, msg in refused)
    for reason in ('no pixel data', 'colour image', 'frames', 'cannot decode', 'neither DICOM'): assert reason in reasons
