# bash completion for weft(1). Installed as
# share/bash-completion/completions/weft, which bash-completion loads the
# first time "weft" is completed.
#
# Keep the commands and options in step with "weft --help": the unit test
# tests/packaging/check-help.py fails when one is missing here.

# The shares weft would find: the same rule as weft itself, where only an
# absolute XDG_DATA_HOME counts.
_weft_shares()
{
    local root=$HOME/.local/share/weft db
    [[ ${XDG_DATA_HOME:-} == /* ]] && root=$XDG_DATA_HOME/weft
    for db in "$root"/*/store.db; do
        [[ -e $db ]] || continue
        db=${db%/store.db}
        printf '%s\n' "${db##*/}"
    done
}

# The directories where a weft share is mounted, from the kernel's table
# (field 5 is the mount point, with spaces as \040; the type follows " - ").
_weft_mountpoints()
{
    local line fields
    while IFS= read -r line; do
        [[ $line == *" - fuse.weft "* ]] || continue
        IFS=" " read -r -a fields <<<"$line"
        printf '%b\n' "${fields[4]}"
    done </proc/self/mountinfo 2>/dev/null
}

_weft()
{
    local cur prev words cword
    _init_completion || return

    local commands='init mount umount status log restore invite join peer device relay'
    if ((cword == 1)); then
        mapfile -t COMPREPLY < <(compgen -W "$commands --help" -- "$cur")
        return
    fi

    local command=${words[1]}
    if [[ $command == --help || $command == -h || $command == help ]]; then
        ((cword == 2)) && mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
        return
    fi

    # Option arguments first: nothing else fits after these.
    case $prev in
    --device-name)
        mapfile -t COMPREPLY < <(compgen -W "$(hostname 2>/dev/null)" -- "$cur")
        return
        ;;
    -o)
        # A comma-separated list: complete the item being typed.
        local done_items=${cur%"${cur##*,}"}
        mapfile -t COMPREPLY < <(compgen -P "$done_items" -W 'ro rw allow_other nopassthrough' -- "${cur##*,}")
        compopt -o nospace
        return
        ;;
    --version | --relay | --listen)
        return
        ;;
    --data)
        _filedir -d
        return
        ;;
    esac

    local options
    case $command in
    init) options='--device-name --relay --listen --help' ;;
    mount) options='-f --foreground -d --debug -o --help' ;;
    umount) options='--help' ;;
    status) options='--json --help' ;;
    log) options='--json --help' ;;
    restore) options='--version --help' ;;
    invite) options='--device-name --help' ;;
    join) options='--name --quiet --help' ;;
    peer) options='--help' ;;
    device) options='--help' ;;
    relay) options='--listen --data -v --verbose --help' ;;
    *) return ;;
    esac
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$options" -- "$cur")
        return
    fi

    # Which positional argument is being typed: count the earlier ones,
    # skipping options and the arguments of those that take one.
    local position=0 i
    for ((i = 2; i < cword; i++)); do
        case ${words[i]} in
        --device-name | -o | --version | --relay | --listen | --data | --name) ((i++)) ;;
        -*) ;;
        *) ((position++)) ;;
        esac
    done

    case $command:$position in
    mount:0 | status:0 | invite:0 | peer:1 | device:1)
        mapfile -t COMPREPLY < <(compgen -W "$(_weft_shares)" -- "$cur")
        ;;
    peer:0)
        mapfile -t COMPREPLY < <(compgen -W "add listen" -- "$cur")
        ;;
    device:0)
        mapfile -t COMPREPLY < <(compgen -W "list remove" -- "$cur")
        ;;
    mount:1 | join:1)
        _filedir -d
        ;;
    umount:0)
        local IFS=$'\n'
        mapfile -t COMPREPLY < <(compgen -W "$(_weft_mountpoints)" -- "$cur")
        ((${#COMPREPLY[@]})) || _filedir -d
        ;;
    log:0 | restore:0)
        _filedir
        ;;
    esac
} &&
    complete -F _weft weft
