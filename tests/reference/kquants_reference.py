"""Random Q4_K/Q5_K/Q6_K blocks and their values as gguf-py (llama.cpp's Python reference)
dequantizes them: tests/fixtures/kquants.json.

    V/bin/python tests/reference/kquants_reference.py
"""
import numpy as np, json, gguf
from gguf.quants import dequantize
from gguf import GGMLQuantizationType as T
rng=np.random.default_rng(0)
out={}
for name,ty,bb in [("q4_k",T.Q4_K,144),("q5_k",T.Q5_K,176),("q6_k",T.Q6_K,210)]:
    raw=rng.integers(0,256,size=bb*2,dtype=np.uint8)
    # sane f16 scales: overwrite the d/dmin fields with small normal values
    blocks=raw.reshape(2,bb)
    for b in blocks:
        if name=="q6_k":
            b[208:210]=np.frombuffer(np.float16(rng.uniform(0.001,0.01)).tobytes(),np.uint8)
        else:
            b[0:2]=np.frombuffer(np.float16(rng.uniform(0.001,0.01)).tobytes(),np.uint8)
            b[2:4]=np.frombuffer(np.float16(rng.uniform(0.001,0.01)).tobytes(),np.uint8)
    y=dequantize(blocks.reshape(-1),ty)
    out[name]={"bytes":blocks.reshape(-1).tolist(),"values":[float(v) for v in y.reshape(-1)]}
json.dump(out,open(__import__('pathlib').Path(__file__).resolve().parents[1]/'fixtures'/'kquants.json','w'))
print({k:len(v['values']) for k,v in out.items()})
