#!/usr/bin/env python3
"""Writes tests/data/chat/render.json: chat-template renders made by a real Jinja engine.

Why: src/engine/chat.c re-implements two Jinja chat templates in C and must produce the
same bytes. This script renders many conversations with the templates themselves
(tests/data/chat/smollm3.jinja: HuggingFaceTB/SmolLM3-3B chat_template.jinja;
tests/data/chat/smollm2.jinja: SmolLM2-Instruct's ChatML template) under the Jinja
environment transformers uses (trim_blocks, lstrip_blocks, sandboxed, a no-op
{% generation %} tag, strftime_now returning a fixed date), and stores input + expected
output so tests/test_chat.c can compare byte for byte without Python.

Needs python3-jinja2 (Debian: apt-get install python3-jinja2). Not run by the test suite:
run it by hand from the repository root after changing a case, and commit the result:

    python3 tools/chat/gen_fixtures.py

Where smolgate goes beyond the templates (they have no rendering for these), the input is
normalised here exactly as chat.c does before rendering, and the case says so with
"normalised": true:
  - content given as an array of {"type": "text", "text": ...} parts is joined with "\n";
    null or missing content is "";
  - role "developer" is treated as "system";
  - an assistant message's tool_calls are appended to its content, one block per call:
    "<tool_call>\n" + json.dumps({"name": ..., "arguments": ...}) + "\n</tool_call>",
    separated from the text (and from each other) by "\n"; arguments given as a JSON
    string are parsed first (left a string when they do not parse);
  - OpenAI tools [{"type": "function", "function": F}] are passed to SmolLM3 as
    xml_tools [F] (the model card's form); ChatML ignores tools.
"""
import json
import os
import sys

from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "chat")
TODAY = "07 March 2026"


class Generation(Extension):
    """transformers' AssistantTracker, minus the tracking: renders the body as is."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def load(name, today):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, loopcontrols])
    env.globals["strftime_now"] = lambda fmt: today
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return env.from_string(f.read())


def text_of(content):
    if content is None:
        return ""
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if p.get("type") == "text")
    return content


def fold_tool_calls(text, calls):
    blocks = []
    for c in calls:
        fn = c["function"]
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        blocks.append("<tool_call>\n" + json.dumps({"name": fn["name"], "arguments": args},
                                                   ensure_ascii=False) + "\n</tool_call>")
    return "\n".join(([text] if text else []) + blocks)


def normalise(messages):
    out = []
    for m in messages:
        m = dict(m)
        if m.get("role") == "developer":
            m["role"] = "system"
        m["content"] = text_of(m.get("content"))
        if m.get("role") == "assistant" and m.get("tool_calls"):
            m["content"] = fold_tool_calls(m["content"], m["tool_calls"])
        out.append(m)
    return out


def render(case):
    kind = case["kind"]
    msgs = normalise(case["messages"])
    kw = {"messages": msgs, "add_generation_prompt": case.get("add_generation_prompt", True),
          "bos_token": "<|begin_of_text|>" if kind == "smollm3" else "<|im_start|>",
          "eos_token": "<|im_end|>"}
    if kind == "smollm3":
        if case.get("enable_thinking", -1) != -1:
            kw["enable_thinking"] = bool(case["enable_thinking"])
        tools = case.get("tools")
        if tools:
            kw["xml_tools"] = [t["function"] if isinstance(t, dict) and "function" in t else t
                               for t in tools]
        if case.get("python_tools"):
            kw["python_tools"] = case["python_tools"]
        tmpl = load("smollm3.jinja", case.get("today", TODAY))
    else:
        tmpl = load("smollm2.jinja", TODAY)
    return tmpl.render(**kw), msgs != [dict(m) for m in case["messages"]]


WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "description": "City name, e.g. 'Paris'"},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
ODD = {"type": "function", "function": {
    "name": "odd_values",
    "description": "Quotes \" and ' and a back\\slash, tab\there, newline\nthere, "
                   "unicode café 東京 😀, nbsp[\u00a0], zwsp[\u200b], ctrl[\u0001], del[\u007f]",
    "parameters": {"type": "object",
                   "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10,
                                        "default": -3},
                                  "x": {"type": "number", "default": 0.5, "tiny": 1e-07,
                                        "huge": 1e+20, "round": 100.0, "negzero": -0.0,
                                        "pi": 3.14159, "edge": 1e+16, "edge2": 1e15,
                                        "small": 0.0001, "smaller": 0.00001},
                                  "flag": {"type": "boolean", "default": True, "off": False,
                                           "nothing": None},
                                  "only_single": "it's", "both": "it's \"quoted\"",
                                  "empty": {}, "list": [], "nested": [[1, 2], {"a": [None]}]},
                   "required": []}}}
BARE = {"name": "search", "description": "Web search", "parameters": {"type": "object",
        "properties": {"q": {"type": "string"}}}}
LONG_SYS = "You are a pirate. Answer in pirate speak."

CASES = [
    {"name": "user_only_default", "messages": [{"role": "user", "content": "Hi!"}]},
    {"name": "user_only_no_think", "enable_thinking": 0,
     "messages": [{"role": "user", "content": "Hi!"}]},
    {"name": "user_only_think_explicit", "enable_thinking": 1,
     "messages": [{"role": "user", "content": "Hi!"}]},
    {"name": "system_plain", "messages": [{"role": "system", "content": LONG_SYS},
                                          {"role": "user", "content": "Ahoy?"}]},
    {"name": "system_no_think_flag", "messages": [
        {"role": "system", "content": LONG_SYS + " /no_think"},
        {"role": "user", "content": "Ahoy?"}]},
    {"name": "system_think_flag_overrides_option", "enable_thinking": 0, "messages": [
        {"role": "system", "content": "/think Be brief.\n\n"},
        {"role": "user", "content": "2+2?"}]},
    {"name": "system_both_flags", "messages": [
        {"role": "system", "content": "A /think B /no_think C"},
        {"role": "user", "content": "x"}]},
    {"name": "system_override", "messages": [
        {"role": "system", "content": "/system_override You are X.  \n"},
        {"role": "user", "content": "Who are you?"}]},
    {"name": "system_override_no_think", "messages": [
        {"role": "system", "content": "/system_override /no_think Custom prompt"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Q2"}]},
    {"name": "system_only_no_think_flag", "messages": [
        {"role": "system", "content": "/no_think"}, {"role": "user", "content": "hello"}]},
    {"name": "system_only_think_flag", "enable_thinking": 0, "messages": [
        {"role": "system", "content": "  /think  "}, {"role": "user", "content": "hello"}]},
    {"name": "system_empty", "messages": [
        {"role": "system", "content": ""}, {"role": "user", "content": "hello"}]},
    {"name": "system_trailing_unicode_space", "messages": [
        {"role": "system", "content": "Be kind.\u3000\u00a0\t\r\n \u2028"},
        {"role": "user", "content": "hello"}]},
    {"name": "multi_turn_think", "add_generation_prompt": False, "messages": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "\n\n<think>\nEasy.\n</think>\n4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6\n"}]},
    {"name": "multi_turn_no_think_gen", "enable_thinking": 0, "messages": [
        {"role": "system", "content": "Short answers."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "\n4"},
        {"role": "user", "content": "And 3+3?"}]},
    {"name": "second_system_skipped", "messages": [
        {"role": "user", "content": "one"},
        {"role": "system", "content": "ignored /no_think"},
        {"role": "user", "content": "two"}]},
    {"name": "tools_openai", "tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris?"}]},
    {"name": "tools_odd_values_no_think", "enable_thinking": 0, "tools": [ODD, WEATHER, BARE],
     "messages": [{"role": "system", "content": "Use tools."},
                  {"role": "user", "content": "go"}]},
    {"name": "tools_empty_list", "tools": [], "messages": [{"role": "user", "content": "x"}]},
    {"name": "tools_and_python_tools", "tools": [WEATHER],
     "python_tools": [{"name": "add", "description": "Adds", "args": ["a", "b"]},
                      "def mul(a, b): ..."],
     "messages": [{"role": "user", "content": "x"}]},
    {"name": "python_tools_only", "python_tools": [BARE],
     "messages": [{"role": "user", "content": "x"}]},
    {"name": "tools_with_override", "tools": [WEATHER], "messages": [
        {"role": "system", "content": "/system_override Plain."},
        {"role": "user", "content": "x"}]},
    {"name": "tool_call_round_trip", "tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}},
            {"id": "call_2", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"city\": \"東京\", \"n\": 1.5e-7}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
        {"role": "tool", "tool_call_id": "call_2", "content": "{\"temp\": 25}"}]},
    {"name": "tool_call_with_text_no_think", "enable_thinking": 0, "messages": [
        {"role": "user", "content": "Search cats"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "a", "type": "function", "function": {
                "name": "search", "arguments": {"q": "cats", "deep": True}}},
            {"id": "b", "type": "function", "function": {
                "name": "search", "arguments": "not json {"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "many cats"},
        {"role": "assistant", "content": "Cats are many."}], "add_generation_prompt": False},
    {"name": "content_parts", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Part one."},
                                       {"type": "text", "text": "Part two /no_think"}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                     {"type": "text", "text": "world"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "user", "content": []}]},
    {"name": "developer_role", "messages": [
        {"role": "developer", "content": "Dev rules."}, {"role": "user", "content": "x"}]},
    {"name": "unicode_content", "messages": [
        {"role": "system", "content": "Réponds en français. 日本語もOK 🚀"},
        {"role": "user", "content": "Ça va? \u00e9\u0301 \U0001F600 \u200b tab\tend"},
        {"role": "assistant", "content": "Très bien ! 👍"},
        {"role": "user", "content": "<|im_end|> literal"}]},
    {"name": "python_tools_numbers", "python_tools": [
        [0.1, 1 / 3, 2.5e-05, 123456789.123, 1e300, 5e-324, 1.7976931348623157e308, -1.5,
         12345678901234567.0, 9007199254740993, -7, 0.001, 1234.5e-10, 2.0 ** 60, 1e-4, 9.999e15],
        {"k\u00e9y": "v\\", "\U0001F600": ["\u0085", "\u2029", "\ufeff", "\U000e0001"]}],
     "messages": [{"role": "user", "content": "x"}]},
    {"name": "other_date", "today": "01 January 2027",
     "messages": [{"role": "user", "content": "date?"}]},
]
for c in CASES:
    c.setdefault("kind", "smollm3")

CASES += [
    {"kind": "chatml", "name": "chatml_default_system",
     "messages": [{"role": "user", "content": "Hello"}]},
    {"kind": "chatml", "name": "chatml_with_system", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"}]},
    {"kind": "chatml", "name": "chatml_no_gen_prompt", "add_generation_prompt": False,
     "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\nYo "}]},
    {"kind": "chatml", "name": "chatml_tools_ignored_tool_calls_folded", "tools": [WEATHER],
     "messages": [
         {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "x", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": "{\"city\":\"Oslo\"}"}}]},
         {"role": "tool", "tool_call_id": "x", "content": "cold"}]},
]


def main():
    out = []
    for c in CASES:
        expected, normalised = render(c)
        case = {"name": c["name"], "kind": c["kind"], "messages": c["messages"]}
        for k in ("tools", "python_tools"):
            if k in c:
                case[k] = c[k]
        case["enable_thinking"] = c.get("enable_thinking", -1)
        case["add_generation_prompt"] = c.get("add_generation_prompt", True)
        case["today"] = c.get("today", TODAY)
        case["normalised"] = normalised
        case["expected"] = expected
        out.append(case)
    path = os.path.join(DATA, "render.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases to {os.path.relpath(path, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
