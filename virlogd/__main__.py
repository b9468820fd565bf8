"""``python -m virlogd``: the daemon."""
from .cli.virlogd import main_entry

main_entry()
