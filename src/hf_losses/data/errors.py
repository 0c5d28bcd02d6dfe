"""The one exception type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the user's data or data arguments.

    Messages are a single line that names the argument, column, split or file at fault and says what is
    allowed or what exists, e.g. ``--source_lang 'xx' is not in the 'translation' column; languages
    present: de, en``. Scripts catch it and print the message without a traceback.
    """
