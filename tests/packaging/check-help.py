#!/usr/bin/env python3
"""Checks that weft's --help, its man page and its bash completion agree.

    check-help.py WEFT MAN_SCD [COMPLETION]

- the commands "weft --help" lists are the man page's "## weft COMMAND"
  subsections, in the same order;
- each subsection's heading is the command's usage line;
- every option "weft COMMAND --help" prints is documented in the command's
  subsection, and every option documented there is printed by --help;
- every value "-o" takes is documented too;
- the completion script offers every command and option.

Help text is the source of truth: it ships in the binary, so when they
disagree it is the man page or the completion that is stale.
"""
import re
import subprocess
import sys

OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][a-z-]*)(?![\w-])")


def help_text(weft, *args):
    return subprocess.run([weft, *args, "--help"], check=True, capture_output=True,
                          text=True).stdout


def printed_options(command_help):
    """Options in the usage line and in the option list's terms ("  -f, --foreground  ...");
    prose that merely mentions another program's flags does not count."""
    lines = command_help.splitlines()
    found = set(OPTION.findall(lines[0]))
    for line in lines[1:]:
        term = re.match(r"\s+(-\S.*?)(?:\s{2,}|$)", line)
        if term:
            found.update(OPTION.findall(term.group(1)))
    return found


def listed_commands(main_help):
    lines = main_help.splitlines()
    start = lines.index("Commands:") + 1
    commands = []
    for line in lines[start:]:
        if not line.strip():
            break
        commands.append(line.split()[0])
    return commands


def man_sections(man_source):
    """{command: (heading, body)} for each "## weft COMMAND" subsection, in order."""
    sections = {}
    current = None
    for line in man_source.splitlines():
        if line.startswith("#"):
            current = None
            match = re.match(r"## (weft (\S+).*)$", line)
            if match:
                current = match.group(2)
                sections[current] = (match.group(1), [])
        elif current:
            sections[current][1].append(line)
    return {name: (heading, "\n".join(body)) for name, (heading, body) in sections.items()}


def documented_options(body):
    """Options defined in a subsection: its lines that start with "*-"."""
    found = set()
    for line in body.splitlines():
        if line.startswith("*-"):
            found.update(re.findall(r"\*(--?[a-zA-Z][a-z-]*)\*", line))
    return found


def o_values(command_help):
    """The values listed for -o: "value (meaning)" items on the -o option's lines."""
    values = []
    in_o = False
    for line in command_help.splitlines():
        if re.match(r"\s+-o ", line):
            in_o = True
        elif re.match(r"\s+-", line) or not line.strip():
            in_o = False
        if in_o:
            values += re.findall(r"([a-z_]+) \(", line)
    return values


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    weft, man_path = sys.argv[1:3]
    completion = open(sys.argv[3]).read() if len(sys.argv) == 4 else None
    man = man_sections(open(man_path).read())
    errors = []

    commands = listed_commands(help_text(weft))
    if not commands:
        errors.append("weft --help lists no commands under 'Commands:'")
    if list(man) != commands:
        errors.append(f"man page commands differ from weft --help:\n"
                      f"  expected (weft --help): {commands}\n  got (man page): {list(man)}")

    for command in commands:
        text = help_text(weft, command)
        if command not in man:
            continue
        heading, body = man[command]
        usage = text.splitlines()[0].removeprefix("usage: ")
        if heading != usage:
            errors.append(f"{command}: man heading differs from the usage line:\n"
                          f"  expected: {usage}\n  got:      {heading}")
        printed = printed_options(text)
        documented = documented_options(body)
        for option in sorted(printed - documented):
            errors.append(f"{command}: option {option} is in 'weft {command} --help' "
                          f"but not defined in the man page")
        for option in sorted(documented - printed):
            errors.append(f"{command}: option {option} is defined in the man page "
                          f"but not in 'weft {command} --help'")
        for value in o_values(text):
            if f"*{value}*" not in body:
                errors.append(f"{command}: -o {value} is in --help but not in the man page")
        if completion is not None:
            offered = re.search(rf"^\s+{re.escape(command)}\) options='([^']*)'", completion,
                                re.MULTILINE)
            if not offered:
                errors.append(f"{command}: the bash completion has no \"{command}) options='...'\"")
            else:
                for option in sorted(printed - set(offered.group(1).split())):
                    errors.append(f"{command}: the bash completion does not offer {option}")

    if completion is not None:
        offered = re.search(r"^\s+local commands='([^']*)'", completion, re.MULTILINE)
        if not offered or offered.group(1).split() != commands:
            errors.append(f"the bash completion's commands differ from weft --help:\n"
                          f"  expected: {commands}\n"
                          f"  got:      {offered.group(1).split() if offered else None}")

    for error in errors:
        print(f"FAIL: {error}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"ok: {len(commands)} commands agree between --help, the man page"
          f"{' and the completion' if completion is not None else ''}")


if __name__ == "__main__":
    main()
