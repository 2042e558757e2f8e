#!/usr/bin/env python3
"""Writes strings.json: the inputs of the tokenizer parity test (deterministic).

    python3 make_strings.py > strings.json
"""
import json
import random

rng = random.Random(20261129)
out = []

prose = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you doing today?",
    "In 1492, Columbus sailed the ocean blue.",
    "Transformers use attention; attention is all you need.",
    "She said: \"It's fine\" -- and left.",
    "Wait... what?! No way!!!",
    "e.g. i.e. etc. Mr. Smith vs. Dr. Jones",
    "The KV cache grows linearly with context length.",
    "Quantization to 4 bits reduces bandwidth by 75%.",
    "Email me at someone@example.com or visit https://example.org/path?q=1&r=2#frag",
]
out += prose
contractions = ["I'm here.", "you'll see", "They're gone", "we've won", "he'd go", "it's", "It'S LOUD",
                "DON'T STOP", "You'LL", "I'M", "'s alone", "rock'n'roll", "o'clock", "ma'am",
                "y'all'd've", "Jones's book", "'re'", "THEY'VE", "can't won't shouldn't"]
out += contractions
cjk = ["日本語のテキストです。", "中文分词测试，包括标点符号！", "한국어 문장입니다.", "東京は日本の首都です",
       "我爱自然语言处理", "カタカナとひらがな", "混合English和中文", "数字123和字母abc",
       "「引用」『二重』【括弧】", "中文 空格 测试"]
out += cjk
emoji = ["😀", "I love 🍕 and 🍣!", "👩‍👩‍👧‍👦 family", "👍🏽 skin tone", "🇯🇵🇺🇸 flags",
         "❤️‍🔥 heart on fire", "🧑‍💻 coding", "emoji at end 🚀", "🏳️‍🌈", "a😀b😀c",
         "👨🏿‍🦱", "🤷‍♀️ shrug", "1️⃣ keycap", "✨✨✨", "☕ coffee"]
out += emoji
digits = ["0", "12", "123456789", "3.14159265358979", "1,000,000", "2026-11-29",
          "9" * 40, "0x1F4A9", "+1 (555) 010-9999", "v1.2.3-rc.4", "1e-6", "₁₂₃ subscripts",
          "٣٤٥ arabic digits", "१२३ devanagari digits", "Ⅻ roman numeral"]
out += digits
spaces = ["a  b", "a    b", "  leading", "trailing   ", "\n", "\n\n\n", "a\nb", "a\n\nb",
          "\t\tindented", "mixed \t \n whitespace", " \n \n ", "line1\r\nline2", "\r\n\r\n",
          " " * 17, "word" + " " * 9 + "word", "x\n    y", "end\n", "  \n\t  ", "a\u00a0b (nbsp)",
          "ideographic\u3000space", "tab\tseparated\tvalues"]
out += spaces
code = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "#include <vector>\nint main() { return 0; }",
    "SELECT * FROM users WHERE id = 42;",
    "const x = () => { console.log('hi'); };",
    "if x != None and y >= 3:\n\tpass",
    "a[i][j] = b->c.d(e, f);",
    "<div class=\"box\">Hello</div>",
    "$ echo $HOME && ls -la | grep '^d'",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "x+=1;y-=2;z*=3;w/=4;",
    "// comment\n/* block */",
    "    def method(self):\n        pass",
    "fn main() -> Result<(), Box<dyn Error>> {}",
    "println!(\"{:?}\", v);",
]
out += code
special = ["<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "text<|im_end|>more",
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat?<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|><|im_end|>", "not special: <|im_sta rt|>", "<think>reasoning</think>answer"]
out += special
other_scripts = ["Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
                 "สวัสดีชาวโลก", "Xin chào thế giới", "Ελληνικά και English", "Ünïcödé àccénts",
                 "Straße und Grüße", "naïve café résumé", "ﬁ ligature", "Ｆｕｌｌｗｉｄｔｈ"]
out += other_scripts
# NFC: decomposed input must normalize to the composed form first.
nfd = ["e\u0301", "cafe\u0301", "A\u030a", "n\u0303o", "Ame\u0301lie", "\u1100\u1161 hangul jamo",
       "o\u0308u\u0308", "resume\u0301 and re\u0301sume\u0301"]
out += nfd
punct = ["!!!", "???", "...", "---", "***", "(a)", "[b]", "{c}", "\"quoted\"", "'single'",
         "«guillemets»", "„low quotes“", "—em dash—", "…ellipsis", "§ 5 ¶ 2", "©®™", "50% off!",
         "a/b\\c|d", "~tilde~", "^caret^", "`backtick`", "#hashtag @mention"]
out += punct

vocab = ["alpha", "beta", "gamma", "delta", "cache", "token", "edge", "cloud", "stream",
         "quantize", "attention", "layer", "bandwidth", "latency", "The", "A", "of", "and", "in",
         "question", "answer", "record", "value", "key", "Model", "compress"]
while len(out) < 240:
    n = rng.randint(3, 25)
    parts = []
    for _ in range(n):
        r = rng.random()
        if r < 0.7:
            parts.append(rng.choice(vocab))
        elif r < 0.8:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 8))))
        elif r < 0.9:
            parts.append(rng.choice([",", ".", ";", ":", "!", "?", "'s", "'ll", "(", ")"]))
        else:
            parts.append(rng.choice(["日本", "😀", "é", "ß", "\n", "  ", "\t"]))
    out.append(" ".join(parts) if rng.random() < 0.8 else "".join(parts))

json.dump(out, __import__("sys").stdout, ensure_ascii=False, indent=0)
print()
