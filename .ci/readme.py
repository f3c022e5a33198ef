"Write README.md from nbs/index.ipynb (markdown cells as they are, code cells as python blocks); --check compares."
import json, sys
from pathlib import Path
root = Path(__file__).resolve().parent.parent
nb = json.loads((root / 'nbs' / 'index.ipynb').read_text())
parts = []
for c in nb['cells']:
    src = ''.join(c['source']).strip()
    if not src or src.startswith('#| hide'): continue
    parts.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
text = '\n\n'.join(parts) + '\n\n<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n'
if '--check' in sys.argv:
    if (root / 'README.md').read_text() != text: sys.exit('README.md is out of sync with nbs/index.ipynb: run python .ci/readme.py')
    print('README.md in sync with nbs/index.ipynb')
else: (root / 'README.md').write_text(text)
