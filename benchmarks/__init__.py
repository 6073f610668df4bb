

def check_output_path(parser, flag: str, path) -> None:
    """Refuse, as a one-line argument error, an output file that cannot be written: a folder
    in its place, or a folder for it that cannot be made. Checked before a benchmark
    measures for minutes, not after. (tracker.sinks is imported here, not at the top:
    segmentation workers import the benchmark modules again and need none of it.)"""
    from tracker.sinks import make_parent_folder

    if path.is_dir():
        parser.error(f"{flag} {path} is a folder; give the file's name")
    try:
        make_parent_folder(path)
    except OSError as exc:
        parser.error(f"cannot write {flag} {path}: {exc.strerror}" if exc.filename else str(exc))
