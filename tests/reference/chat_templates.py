"""Chat templates of the families Hearth loads, rendered by transformers' apply_chat_template.

tests/fixtures/chat-templates/<family>.jinja is the template as the family's
tokenizer_config.json carries it (qwen3.jinja: Qwen3's, with thinking blocks, as TRL keeps it
in trl/chat_templates/qwen3.jinja; gemma3.jinja: Gemma 3's, which has no system role: the
system message goes in front of the first user turn; phi3.jinja: Phi-3.5-mini's, as TRL keeps it
in trl/chat_templates/phi3.jinja; smollm3.jinja: SmolLM3's, with its reasoning mode from
enable_thinking or /think in the system message, today's date from strftime_now, and the
{% generation %} markers of transformers' extension). reference.json holds, per template and
case, the messages, add_generation_prompt, enable_thinking (absent: not passed, the
template's default), the BOS and EOS tokens and the text transformers renders. Hearth must
render the same text. strftime_now gives DATE (Hearth's test passes the same date).

    V/bin/python tests/reference/chat_templates.py
"""
import json
from pathlib import Path

from datetime import datetime

from transformers import PreTrainedTokenizerFast
from transformers.utils import chat_template_utils

DIR = Path(__file__).resolve().parents[1] / "fixtures" / "chat-templates"
USER = {"role": "user", "content": "When are you open?"}
SYSTEM = {"role": "system", "content": "You answer for a bike shop."}
ANSWER = {"role": "assistant", "content": "Monday to Saturday, 9:00 to 18:00."}
THOUGHT = {"role": "assistant", "content": "<think>\nThe hours are on the sign.\n</think>\n\nMonday to Saturday."}
CASES = [
    ([USER], True, None),
    ([SYSTEM, USER], True, None),
    ([USER], True, False),
    ([USER], True, True),
    ([USER, ANSWER], False, None),
    ([SYSTEM, USER, ANSWER], False, None),
    ([USER, THOUGHT], False, None),
    ([USER, ANSWER, {"role": "user", "content": "And on Sunday?"}], True, None),
    ([USER, THOUGHT, {"role": "user", "content": "And on Sunday?"}, ANSWER], False, None),
    ([{"role": "system", "content": "You answer for a bike shop. /no_think"}, USER, ANSWER], False, None),
]


DATE = (2026, 11, 30)


class FixedDatetime:
    @staticmethod
    def now():
        return datetime(*DATE)


def main():
    chat_template_utils.datetime = FixedDatetime  # strftime_now's clock
    # any tokenizer will do: the template is what renders
    tok = PreTrainedTokenizerFast.from_pretrained(DIR.parents[0] / "tiny-qwen3")
    out = []
    for path in sorted(DIR.glob("*.jinja")):
        template = path.read_text()
        for messages, gen, thinking in CASES:
            extra = {} if thinking is None else {"enable_thinking": thinking}
            text = tok.apply_chat_template(messages, chat_template=template, add_generation_prompt=gen, tokenize=False, **extra)
            out.append({"template": path.name, "messages": messages, "add_generation_prompt": gen, "enable_thinking": thinking,
                        "bos_token": tok.bos_token, "eos_token": tok.eos_token, "date": DATE, "text": text})
    (DIR / "reference.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(len(out), "renderings")


if __name__ == "__main__":
    main()
