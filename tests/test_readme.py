"The README's Python examples run as written (in a scratch folder beside a link to data_samples/)."
import os, re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r'```python\n(.*?)```', (REPO / 'README.md').read_text(), flags=re.S)
    assert any('from mcal import learner' in b for b in blocks), 'the README shows `from mcal import learner`'
    (tmp_path / 'data_samples').symlink_to(REPO / 'data_samples')
    monkeypatch.chdir(tmp_path)
    ns = {}
    for block in blocks: exec(compile(block, 'README.md', 'exec'), ns)
    learn = ns['learn']
    assert learn.config['classes'] == ['benign', 'malignant']
    assert len(learn.opt.param_lists) == 4 and learn.opt.frozen_idx == 0          # discriminative groups, unfrozen
    assert {p.name for p in (tmp_path / 'models' / 'calc').iterdir()} == {'config.json', 'model.onnx', 'model.safetensors'}
    assert not set(ns['train'].patient_id) & set(ns['patches'][ns['split'] == 'test'].patient_id)
