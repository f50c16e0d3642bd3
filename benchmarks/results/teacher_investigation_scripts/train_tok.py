"""Train the tiny model's tokenizer (same code as craft_pl/model/tiny.py, tokenizers only) on a dumped corpus;
print hashes of vocab, merges and the encoding of the corpus."""
import hashlib, json, sys
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<action>", "</action>",
                  "<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>"]
corpus = json.load(open(sys.argv[1]))
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=int(sys.argv[2]) if len(sys.argv) > 2 else 1024, special_tokens=SPECIAL_TOKENS,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train_from_iterator(corpus, trainer=trainer)
model = json.loads(tok.to_str())["model"]
vocab = sorted(tok.get_vocab().items())
merges = model["merges"]
ids = [e.ids for e in tok.encode_batch(corpus[:2000])]
h = lambda x: hashlib.sha256(json.dumps(x).encode()).hexdigest()[:12]
print(tokenizers.__version__, "vocab", len(vocab), h(vocab), "merges", len(merges), h(merges), "ids", h(ids),
      "tokens/row", round(sum(map(len, ids)) / len(ids), 2))
