#!/usr/bin/env python3
"""Lists the longest function bodies in the project's C++ sources.

Relies on clang-format's layout (the tree is kept formatted): a definition starts on a
line at namespace or class indentation whose text up to the matching ')' is followed by
'{' at the end of a line, and ends at the first '}' line with the same indentation.
Counts lines from the signature's first line to the closing brace, as clang-tidy's
readability-function-size does. Tests and fuzz targets are left out. With --max N it
exits 1 when any function is longer than N lines (the lint test runs it so).
Usage: function_lengths.py [--top N] [--max N] [--root DIR]
"""
import argparse
import pathlib
import re
import subprocess

SIGNATURE = re.compile(r"^( {0,4})(?!(if|for|while|switch|return|namespace|class|struct|enum|union)\b)"
                       r"[A-Za-z_~][\w:<>,*&~ \[\]]*\(")
CONTROL = re.compile(r"^\s*(if|for|while|switch|else|do|try|catch)\b")


def functions(path):
    lines = path.read_text(errors="replace").splitlines()
    i = 0
    while i < len(lines):
        m = SIGNATURE.match(lines[i])
        if not m or lines[i].rstrip().endswith(";"):
            i += 1
            continue
        indent = m.group(1)
        # The signature may wrap; find the line that ends with '{' before any ';'.
        j = i
        while j < len(lines) and j - i < 12:
            text = lines[j].rstrip()
            if text.endswith(";") or text.endswith("{") or text.endswith("}"):
                break  # a declaration, a body's start, or a one-line definition
            j += 1
        if j >= len(lines) or not lines[j].rstrip().endswith("{") or lines[j].rstrip().endswith(";"):
            i += 1
            continue
        if "=" in lines[i].split("(")[0]:
            i += 1
            continue
        if lines[j].rstrip() == indent + "}" or lines[j].rstrip().endswith("{}"):
            i = j + 1
            continue
        k = j + 1
        while k < len(lines) and not lines[k].startswith(indent + "}"):
            if lines[k].strip() and not lines[k].startswith(indent + " ") and not lines[k].startswith("#"):
                break
            k += 1
        if k < len(lines) and lines[k].startswith(indent + "}"):
            name = lines[i].split("(")[0].split()[-1] if lines[i].split("(")[0].split() else "?"
            yield name, i + 1, k - i + 1
            i = k + 1
        else:
            i += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--max", type=int, default=0, help="fail above this many lines")
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    root = pathlib.Path(args.root)
    files = subprocess.run(["git", "ls-files", "*.cc", "*.h"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    found = []
    for f in files:
        if f.startswith("tests/") or "_fuzz" in f or f.startswith("third_party/"):
            continue
        for name, line, count in functions(root / f):
            found.append((count, f"{f}:{line}", name))
    found.sort(reverse=True)
    for count, where, name in found[: args.top]:
        print(f"{count:5d}  {name:40s} {where}")
    if args.max > 0:
        over = [f for f in found if f[0] > args.max]
        for count, where, name in over:
            print(f"function_lengths: {name} ({where}) has {count} lines; the limit is {args.max}")
        if over:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
