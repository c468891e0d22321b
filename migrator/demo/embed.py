#!/usr/bin/env python3
"""Embed a text file in the ferry binary: embed.py INPUT OUTPUT.c SYMBOL
writes `const char SYMBOL[]` holding INPUT's bytes and a terminating NUL."""
import sys

src, out, name = sys.argv[1:4]
data = open(src, "rb").read()
with open(out, "w") as f:
    f.write("/* Generated from %s by migrator/demo/embed.py: do not edit. */\n" % src.split("/")[-1])
    f.write("const char %s[] = {\n" % name)
    for i in range(0, len(data), 24):
        f.write("  " + ", ".join(str(b) for b in data[i:i + 24]) + ",\n")
    f.write("  0\n};\n")
