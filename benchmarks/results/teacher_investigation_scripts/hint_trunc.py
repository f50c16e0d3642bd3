import json, sys
sys.path.insert(0, "/tmp/head_src")
from craft_pl.model.tiny import train_tokenizer
corpus = json.load(open("/tmp/ti/corpus_cur.json"))
tok = train_tokenizer(corpus, 1024)
lens = [len(tok(t, add_special_tokens=False).input_ids) for t in corpus]
hinted = [i for i, t in enumerate(corpus) if t.startswith("Hint:")]
print("rows", len(corpus), "hinted", len(hinted), "max len", max(lens), "rows>512", sum(l > 512 for l in lens),
      "hinted>500", sum(lens[i] > 500 for i in hinted))
import statistics
print("mean len", statistics.mean(lens), "hint tokens", statistics.mean(len(tok(corpus[i].split('\n\n')[0]).input_ids) for i in hinted[:200]))
print(repr(corpus[hinted[0]][:1500]))
