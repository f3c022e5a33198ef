"Collapse console progress bars in the notebooks' saved stream outputs to what a terminal would finally show (epoch tables stay)."
import json, re, sys
from pathlib import Path
root = Path(__file__).resolve().parent.parent
BAR = re.compile(r'\|[█\-]*\|\s*\d+\.\d+%|^\s*(Epoch \d+/\d+ :)?\s*$')

def tidy(text:str) -> str:
    "Each line as a terminal shows it after its carriage returns; bare progress-bar lines dropped."
    lines = []
    for line in text.split('\n'):
        shown = next((s for s in reversed(line.split('\r')) if s.strip()), '').replace('█', '')
        if shown.strip() and not BAR.search(shown): lines.append(shown.rstrip())
    return '\n'.join(lines) + ('\n' if lines else '')

changed = 0
for f in sorted((root / 'nbs').glob('*.ipynb')):
    nb = json.loads(f.read_text())
    for c in nb['cells']:
        outs = []
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream':
                text = tidy(''.join(o['text']))
                if not text: continue
                o['text'] = text.splitlines(keepends=True)
            outs.append(o)
        if c.get('outputs') is not None and outs != c['outputs']: c['outputs'] = outs
    new = json.dumps(nb, indent=1, ensure_ascii=False) + '\n'
    if new != f.read_text(): f.write_text(new); changed += 1
print(f'tidied progress bars in {changed} notebook(s)')
