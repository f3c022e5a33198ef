"""The real reader on CBIS-DDSM calcifications: BI-RADS against pathology, with CIs and N.
Run: python benchmarks/cbis_reader.py   (reads ../shared/data or $MCAL_DATA; writes benchmarks/results/cbis_reader.csv)"""
import time
from pathlib import Path
import pandas as pd
from mcal.datasets import load_cbis_ddsm, shared_data_dir
from mcal.clinical import reader_analysis

t0 = time.time()
data = shared_data_dir()
if data is None: raise SystemExit('no ../shared/data (set MCAL_DATA)')
cbis = load_cbis_ddsm(data / 'cbis_ddsm_meta', lesion_types=['calcification'])
biopsied = cbis[cbis.pathology != 'BENIGN_WITHOUT_CALLBACK']
rows = {'train': cbis[cbis.official_split == 'train'], 'test': cbis[cbis.official_split == 'test'], 'pooled': cbis,
        'pooled, biopsied only': biopsied, 'test, biopsied only': biopsied[biopsied.official_split == 'test']}
out = pd.DataFrame({k: reader_analysis(v, n_boot=1000) for k, v in rows.items()}).T
out.index.name = 'case set (BENIGN_WITHOUT_CALLBACK = benign; BI-RADS 0 excluded)'
dest = Path(__file__).parent / 'results' / 'cbis_reader.csv'
out.to_csv(dest)
print(out.to_string()); print(f'{time.time() - t0:.1f} s -> {dest}')
