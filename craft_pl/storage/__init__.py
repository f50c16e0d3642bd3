"""Where a run writes: files replaced atomically (``atomic``) and one run per log folder (``run_folder``)."""
