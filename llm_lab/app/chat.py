"""The terminal side of ``python generate.py init_from=... chat=true``: read a line, stream the
answer, until Ctrl-D (end of input). ``/reset`` forgets the conversation, ``/system TEXT`` starts a
new one under that system message. The conversation itself is :class:`llm_lab.models.chat.Chat`.
"""

from __future__ import annotations

import sys
from typing import TextIO

from llm_lab.console import for_terminal
from llm_lab.models.chat import Chat

HELP = (
    "chat: type a message; /reset forgets the conversation, /system TEXT sets the system message; "
    "Ctrl-D leaves"
)


def chat_loop(chat: Chat, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """Talk until the input ends; return the number of answers given."""
    interactive = stdin.isatty()
    print(HELP, file=sys.stderr, flush=True)
    answered = 0
    while True:
        if interactive:
            print("> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:  # Ctrl-D, or the end of a piped input
            if interactive:
                print(file=stdout)
            return answered
        text = line.rstrip("\n")
        if text.strip() == "/reset":
            chat.reset()
            print("(the conversation is forgotten)", file=sys.stderr, flush=True)
        elif text.startswith("/system"):
            chat.reset(system=text[len("/system") :].strip())
            print("(a new conversation under this system message)", file=sys.stderr, flush=True)
        elif text.strip():
            for piece in chat.say(text):
                print(for_terminal(piece, stdout), end="", file=stdout, flush=True)
            print(file=stdout, flush=True)
            answered += 1
