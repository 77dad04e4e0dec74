"""GGUF tokenizer fixtures: one small byte-level BPE per pre-tokenizer that Hearth rebuilds
from GGUF metadata (tokenizer.ggml.pre = gpt2, smollm, llama-bpe, qwen2, gpt-4o: Phi-4-mini), with HF's token
ids for a set of texts; and llama-spm.gguf, a SentencePiece BPE vocabulary (Llama 2,
TinyLlama, Mistral, Phi-3: tokenizer.ggml.model "llama", scores instead of merges, byte
fallback) trained with the sentencepiece package, whose own ids are the reference, and
gemma-spm.gguf, the same without the dummy "▁" prefix (Gemma: add_space_prefix false). (transformers' GGUF
loader differs from sentencepiece on one text: it drops one of two leading spaces, as its
Metaspace pre-tokenizer does not prepend "▁" to a text that starts with a space. It also
omits Qwen2's NFC step, so it differs on the decomposed accent there.)

Each tokenizer is built with the `tokenizers` package the way that family's tokenizer.json
is (SmolLM2: digits split one by one; Llama 3: its split regex, merges ignored for whole
vocabulary words, "<|begin_of_text|>" in front; Qwen2: its split regex after NFC), trained
on a small corpus, and written as a GGUF file that holds only the tokenizer metadata, the
way llama.cpp's converter writes it (tokens, merges, token types, pre, special ids,
add_bos). reference.json holds, per fixture and text, HF's ids and decoded text, and the
ids that transformers' own GGUF loader gives, where it can load that pre-tokenizer (an
independent reading of the same metadata).

    V/bin/python tests/reference/gguf_tokenizers.py
"""
import json
from pathlib import Path

import gguf
import sentencepiece as spm
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "gguf-tokenizers"
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CORPUS = [
    "Hello world! It's a test of 12345 and 678 apples; they'll see what we've done.",
    "Customer service: How do I reset my password? Click 'Forgot password' on the login page.",
    "繁體中文：你好，世界。我們的客服中心全天候提供服務。",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "I'M SHOUTING, YOU'RE NOT, WE'LL SEE.   Spaces   everywhere.",
    "café naïve résumé 😀 🙂",
] * 40
TEXTS = [
    "Hello world! It's 12345 apples.",
    "  leading spaces\n\nand newlines\t tabs   ",
    "繁體中文：你好，世界。",
    "def f(x):\n    return x**2  # 😀",
    "I'M SHOUTING, they'll SEE 3.14159",
    "cafe\u0301 na\u00efve",  # a decomposed é: NFC (Qwen2) composes it
    "Unseen words: zebra quokka 987654321",
]
SPECIALS = {
    "gpt2": ["<|endoftext|>"],
    "smollm": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "llama-bpe": ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "gpt-4o": ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"],
}


def build(pre):
    byte_level = lambda use_regex: pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=use_regex)
    split = lambda pattern: pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    tok = Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    tok.pre_tokenizer = {
        "gpt2": byte_level(True),
        "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level(True)]),
        "llama-bpe": pre_tokenizers.Sequence([split(LLAMA3_SPLIT), byte_level(False)]),
        "qwen2": pre_tokenizers.Sequence([split(QWEN2_SPLIT), byte_level(False)]),
        "gpt-4o": pre_tokenizers.Sequence([split(GPT4O_SPLIT), byte_level(False)]),
    }[pre]
    if pre == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS[pre], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if pre == "llama-bpe":
        # Llama 3: ignore_merges is a model setting the trainer drops
        spec = json.loads(tok.to_str())
        spec["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(spec))
        bos = SPECIALS[pre][0]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def write_gguf(pre, tok, path):
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    specials = set(SPECIALS[pre])
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2" if pre == "gpt2" else pre)  # llama.cpp's name
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab[SPECIALS[pre][0]])
    w.add_eos_token_id(vocab[SPECIALS[pre][-1] if pre != "llama-bpe" else "<|eot_id|>"])
    w.add_add_bos_token(pre == "llama-bpe")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sentencepiece_fixture(from_gguf_loader, name="llama-spm", arch="llama", dummy_prefix=True):
    """A SentencePiece BPE model as Llama 2's: "▁" prefix, byte fallback, digits split; written
    as llama.cpp's converter writes tokenizer.model (pieces, scores, types). With
    dummy_prefix False, as Gemma's: no "▁" in front of the text (add_space_prefix false)."""
    tmp = OUT / "spm-corpus.txt"
    tmp.write_text("\n".join(CORPUS))
    prefix = OUT / "spm"
    spm.SentencePieceTrainer.train(input=str(tmp), model_prefix=str(prefix), vocab_size=420, model_type="bpe",
                                   byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   allow_whitespace_only_pieces=True, add_dummy_prefix=dummy_prefix, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    for f in [tmp, OUT / "spm.model", OUT / "spm.vocab"]:
        f.unlink()
    path = OUT / f"{name}.gguf"
    kind = lambda i: (gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i)
                      else gguf.TokenType.BYTE if sp.is_byte(i) else gguf.TokenType.UNUSED if sp.is_unused(i) else gguf.TokenType.NORMAL)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([sp.id_to_piece(i) for i in range(sp.get_piece_size())])
    w.add_token_scores([sp.get_score(i) for i in range(sp.get_piece_size())])
    w.add_token_types([kind(i) for i in range(sp.get_piece_size())])
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_space_prefix(dummy_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    hf = from_gguf_loader(path)
    cases = []
    for text in TEXTS:
        ids = [sp.bos_id()] + sp.encode(text)
        case = {"text": text, "ids": ids, "decoded": sp.decode(ids)}
        if hf is not None:
            case["transformers_gguf_ids"] = hf(text)["input_ids"]
        cases.append(case)
    return path, cases


def transformers_gguf(path):
    try:
        return AutoTokenizer.from_pretrained(str(OUT), gguf_file=path.name)
    except Exception as e:  # transformers does not read every pre-tokenizer
        print(path.name, "transformers' GGUF loader:", type(e).__name__, str(e)[:200])
        return None


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    ref = {}
    for pre in SPECIALS:
        tok = build(pre)
        path = OUT / f"{pre}.gguf"
        write_gguf(pre, tok, path)
        from_gguf = transformers_gguf(path)
        cases = []
        for text in TEXTS:
            ids = tok.encode(text).ids
            case = {"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True)}
            if from_gguf is not None:
                case["transformers_gguf_ids"] = from_gguf(text)["input_ids"]
            cases.append(case)
        agree = sum(c.get("transformers_gguf_ids") == c["ids"] for c in cases)
        print(pre, path.stat().st_size, "bytes;", f"transformers' GGUF loader agrees on {agree}/{len(cases)} texts")
        ref[pre] = cases
    for name, arch, dummy_prefix in [("llama-spm", "llama", True), ("gemma-spm", "gemma3", False)]:
        path, cases = sentencepiece_fixture(transformers_gguf, name, arch, dummy_prefix)
        agree = sum(c.get("transformers_gguf_ids") == c["ids"] for c in cases)
        print(name, path.stat().st_size, "bytes;", f"transformers' GGUF loader agrees on {agree}/{len(cases)} texts")
        ref[name] = cases
    (OUT / "reference.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
