"""The bad-input suite: each kind of bad input gives one clear mcal error naming the file or row,
and a batch run keeps going and reports what it skipped."""
from pathlib import Path
import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.encaps import encapsulate
from mcal.core import MCalError, DicomError, ImageFileError, AnnotationError, LabelError, SplitLeakError
from mcal.dicom import read_mammogram, Mammogram
from mcal.dicom_write import write_dicom
from mcal.roi import extract_patch, Circle, roi_from_row
from mcal.datasets import load_csv, validate_table, usable, issues, load_cbis_ddsm
from mcal.data import build_patches, check_no_leak, paper_split, patch_dataloaders


def _good(tmp_path, pixels, name='good.dcm'):
    return write_dicom(pixels, tmp_path / name, pixel_spacing_mm=0.1)


def test_truncated_dicom(tmp_path, pixels):
    full = _good(tmp_path, pixels).read_bytes()
    bad = tmp_path / 'truncated.dcm'; bad.write_bytes(full[:len(full) // 3])
    with pytest.raises(DicomError, match='truncated.dcm.*truncated'): read_mammogram(bad)


def test_not_dicom(tmp_path):
    bad = tmp_path / 'report.dcm'; bad.write_text('this is a radiology report, not an image')
    with pytest.raises(DicomError, match='report.dcm: not a DICOM file'): read_mammogram(bad)


def test_unknown_file_type(tmp_path):
    bad = tmp_path / 'notes.xyz'; bad.write_text('hello')
    with pytest.raises(ImageFileError, match='notes.xyz: neither DICOM nor a known image type'): read_mammogram(bad)


def test_missing_pixel_data(tmp_path, pixels):
    ds = pydicom.dcmread(_good(tmp_path, pixels)); del ds.PixelData
    ds.save_as(tmp_path / 'nopix.dcm')
    with pytest.raises(DicomError, match='nopix.dcm: no pixel data'): read_mammogram(tmp_path / 'nopix.dcm')


def test_unsupported_transfer_syntax(tmp_path, pixels):
    ds = pydicom.dcmread(_good(tmp_path, pixels))
    ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML        # no decoder exists for video in a mammogram
    ds.PixelData = encapsulate([b'\x00' * 64]); ds['PixelData'].VR = 'OB'
    ds.save_as(tmp_path / 'mpeg.dcm')
    with pytest.raises(DicomError, match='mpeg.dcm: cannot decode transfer syntax MPEG2.*convert the file'): read_mammogram(tmp_path / 'mpeg.dcm')


def test_missing_plugin_is_named():
    from mcal.dicom import decoder_hint
    assert 'pylibjpeg-libjpeg' in decoder_hint(uid.JPEGLSLossless)
    assert 'pylibjpeg-openjpeg' in decoder_hint(uid.JPEG2000Lossless)


def test_constant_image(tmp_path):
    p = write_dicom(np.full((20, 20), 100, np.uint16), tmp_path / 'flat.dcm')
    with pytest.raises(DicomError, match='flat.dcm: constant image'): read_mammogram(p)


def test_colour_image(tmp_path):
    rgb = np.zeros((20, 20, 3), np.uint8); rgb[..., 0] = 200; rgb[..., 2] = 30
    Image.fromarray(rgb).save(tmp_path / 'photo.png')
    with pytest.raises(ImageFileError, match='photo.png: colour image'): read_mammogram(tmp_path / 'photo.png')


def test_truncated_png(tmp_path):
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20)).save(tmp_path / 'a.png')
    data = (tmp_path / 'a.png').read_bytes(); (tmp_path / 'cut.png').write_bytes(data[:60])
    with pytest.raises(ImageFileError, match='cut.png: unreadable image'): read_mammogram(tmp_path / 'cut.png')


def test_roi_outside_image(pixels):
    m = Mammogram(pixels.astype(np.float32) / 4095, path='film.dcm', pixel_spacing_mm=0.1)
    with pytest.raises(AnnotationError, match=r'film.dcm: ROI centre \(500.0, 10.0\) lies outside the 100x120 image'):
        extract_patch(m, Circle(500, 10, 5))


def test_unknown_spacing(pixels):
    m = Mammogram(pixels.astype(np.float32) / 4095, path='export.png')
    with pytest.raises(AnnotationError, match='export.png: pixel spacing unknown; pass pixel_spacing_mm'):
        extract_patch(m, Circle(50, 50, 5))


def test_missing_csv_columns(tmp_path):
    (tmp_path / 'x.csv').write_text('patient,file\np1,a.dcm\n')
    with pytest.raises(AnnotationError, match=r"x.csv: missing required column\(s\) \['image_path', 'label', 'patient_id'\]"):
        load_csv(tmp_path / 'x.csv')


def _study(tmp_path, pixels, rows):
    _good(tmp_path, pixels, 'a.dcm')
    (tmp_path / 's.csv').write_text('roi_id,patient_id,image_path,x,y,radius,label,birads\n' + '\n'.join(rows) + '\n')
    return load_csv(tmp_path / 's.csv')


def test_unknown_label_duplicate_id_bad_birads_kept_as_issues(tmp_path, pixels):
    t = _study(tmp_path, pixels, ['r1,p1,a.dcm,50,50,5,benign,2', 'r2,p1,a.dcm,50,50,5,maybe,3',
                                   'r1,p2,a.dcm,40,40,5,malignant,5', 'r4,p3,a.dcm,40,40,5,malignant,7'])
    assert len(t) == 4                                      # nothing silently dropped
    found = dict(zip(t.roi_id + '#' + t.index.astype(str), t.issue))
    assert "unknown label 'maybe'" in found['r2#1']
    assert "duplicate roi_id 'r1'" in found['r1#0'] and "duplicate roi_id 'r1'" in found['r1#2']
    assert "unknown BI-RADS assessment '7'" in found['r4#3']
    assert len(usable(t)) == 0
    with pytest.raises(AnnotationError, match=r"row 0 \(roi_id 'r1'\): duplicate roi_id"): validate_table(t.assign(issue=''), strict=True)


def test_patient_in_two_splits():
    t = pd.DataFrame(dict(patient_id=['p1', 'p1', 'p2', 'p3'], label=['benign', 'malignant', 'benign', 'malignant'],
                          patch_path=['a', 'b', 'c', 'd']))
    with pytest.raises(SplitLeakError, match=r"1 patient\(s\) on both sides.*\['p1'\]"): check_no_leak(t.iloc[:1], t.iloc[1:])
    with pytest.raises(SplitLeakError): patch_dataloaders(t, valid_idx=[1])


def test_paper_split_never_leaks():
    rng = np.random.default_rng(5)
    t = pd.DataFrame(dict(patient_id=rng.integers(0, 40, 200).astype(str), label=rng.choice(['benign', 'malignant'], 200)))
    for seed in range(5):
        s = paper_split(t, seed=seed)
        check_no_leak(t[s == 'train'], t[s == 'test'])


def test_bad_geometry_rows():
    with pytest.raises(AnnotationError, match="row r9: column 'radius' is missing"): roi_from_row(dict(roi_id='r9', roi_shape='circle', x=1, y=1))
    with pytest.raises(AnnotationError, match='row r3: empty box'): roi_from_row(dict(roi_id='r3', roi_shape='box', x0=5, y0=5, x1=5, y1=9))


def test_cbis_unknown_pathology(tmp_path):
    (tmp_path / 'calc_case_description_train_set.csv').write_text(
        'patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path\n'
        'P_1,2,LEFT,CC,1,calcification,PLEOMORPHIC,CLUSTERED,4,UNPROVEN,3,a/1/2/000000.dcm,b/1/2/000000.dcm,b/1/2/000001.dcm\n')
    t = load_cbis_ddsm(tmp_path)
    assert t.issue[0].startswith('unknown pathology UNPROVEN')


def test_batch_keeps_going_and_reports(tmp_path, pixels):
    """One good image among bad ones: the good ROIs come out, every bad one is reported with its reason."""
    _good(tmp_path, pixels, 'a.dcm')
    (tmp_path / 'b.dcm').write_bytes(b'not a dicom at all')
    full = (tmp_path / 'a.dcm').read_bytes(); (tmp_path / 'c.dcm').write_bytes(full[:500])
    write_dicom(np.full((20, 20), 9, np.uint16), tmp_path / 'd.dcm')
    rows = [dict(roi_id='ok1', patient_id='p1', image_path=str(tmp_path / 'a.dcm'), roi_shape='circle', x=50, y=60, radius=5, label='benign'),
            dict(roi_id='ok2', patient_id='p1', image_path=str(tmp_path / 'a.dcm'), roi_shape='circle', x=20, y=20, radius=5, label='malignant'),
            dict(roi_id='off', patient_id='p1', image_path=str(tmp_path / 'a.dcm'), roi_shape='circle', x=999, y=20, radius=5, label='malignant'),
            dict(roi_id='notdcm', patient_id='p2', image_path=str(tmp_path / 'b.dcm'), roi_shape='circle', x=5, y=5, radius=2, label='benign'),
            dict(roi_id='trunc', patient_id='p3', image_path=str(tmp_path / 'c.dcm'), roi_shape='circle', x=5, y=5, radius=2, label='benign'),
            dict(roi_id='flat', patient_id='p4', image_path=str(tmp_path / 'd.dcm'), roi_shape='circle', x=5, y=5, radius=2, label='benign')]
    res = build_patches(pd.DataFrame(rows), tmp_path / 'cache', size=32, progress=False)
    assert res.done == ['ok1', 'ok2']
    reasons = dict(zip(res.skipped.item, res.skipped.reason))
    assert set(reasons) == {'off', 'notdcm', 'trunc', 'flat'}
    assert 'outside' in reasons['off'] and 'not a DICOM' in reasons['notdcm'] and 'constant image' in reasons['flat']
    assert 'c.dcm' in reasons['trunc']
    assert len(list((tmp_path / 'cache').glob('*.tmp.npz'))) == 0    # nothing half-written


def test_strict_validation_refuses_rows_that_carry_an_issue(tmp_path, pixels):
    "strict=True raises on a row whose loader already recorded an issue, naming every such row."
    t = _study(tmp_path, pixels, ['r1,p1,a.dcm,50,50,5,benign,2', 'r2,p1,a.dcm,50,50,5,maybe,3', 'r3,p2,missing.dcm,40,40,5,malignant,5'])
    assert list(t.issue != '') == [False, True, True]
    with pytest.raises(AnnotationError, match=r"2 row\(s\) with problems: row 1 \(roi_id 'r2'\): unknown label 'maybe'.*row 2 \(roi_id 'r3'\): image file not found"):
        validate_table(t, strict=True)
    assert len(validate_table(usable(t), strict=True)) == 1


def test_metrics_bad_inputs_are_mcal_errors():
    from mcal.metrics import auc, auc_ci, binary_metrics, patient_bootstrap, reliability, OperatingPoint
    from mcal.clinical import results_table
    y, s = [0, 1, 0, 1], [0.1, 0.9, 0.3, 0.6]
    with pytest.raises(MCalError, match='scores must be numbers'): auc(y, ['low', 'high', 'low', 'high'])
    with pytest.raises(MCalError, match='not 95'): auc_ci(y, s, level=95)
    with pytest.raises(MCalError, match='4 labels but 2 scores'): binary_metrics(y, [0.1, 0.2], 0.5)
    with pytest.raises(MCalError, match="threshold must be a number, not 'high'"): binary_metrics(y, s, 'high')
    with pytest.raises(MCalError, match='4 labels but 2 patient_ids'): patient_bootstrap(auc, y, s, patient_ids=['a', 'b'], n_boot=10)
    with pytest.raises(MCalError, match='not 1.5'): patient_bootstrap(auc, y, s, n_boot=10, level=1.5)
    with pytest.raises(MCalError, match='only one class'): patient_bootstrap(lambda yy, ss: float(ss.mean()), [0, 0, 0], [1, 2, 3], n_boot=10)
    with pytest.raises(MCalError, match='n_bins must be a positive integer, not 0'): reliability(y, s, n_bins=0)
    with pytest.raises(MCalError, match=r'target_sensitivity must be in \(0, 1\], not 95'): OperatingPoint.fit(y, s, 'sensitivity', 95)
    with pytest.raises(MCalError, match='4 labels but 3 reader BI-RADS'): results_table(y, s, ['2', '5', '3'], n_boot=10)


@pytest.mark.parametrize('kwargs,says', [(dict(n_patients=0), 'n_patients=0'), (dict(n_patients=-3), 'n_patients=-3'),
                                         (dict(clusters_per_image=0), 'clusters_per_image=0'), (dict(shape=(448,)), r'shape=\(448,\)'),
                                         (dict(pixel_spacing_mm=-0.1), 'pixel_spacing_mm=-0.1'),
                                         (dict(shape=(48, 48)), r'shape=\(48, 48\) at pixel_spacing_mm=0.1: the breast is too small')])
def test_synth_bad_arguments_are_named(tmp_path, kwargs, says):
    from mcal.synth import make_study, add_cluster
    with pytest.raises(MCalError, match=says): make_study(tmp_path / 'study', **kwargs)
    assert not (tmp_path / 'study' / 'labels.csv').exists()
    with pytest.raises(MCalError, match="kind='calcified'"): add_cluster(np.zeros((64, 64), np.float32), np.random.default_rng(0), 32, 32, 'calcified')
