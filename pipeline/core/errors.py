class EdgeError(Exception):
    """The one project error: its message names the file or value, the figure, and the fix. The CLI prints it on one
    line (`error: ...`) and exits non-zero."""
