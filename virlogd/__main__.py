"""``python -m virlogd``: the daemon."""
from .cli import main_entry

main_entry()
