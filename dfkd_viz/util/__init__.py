"""General helpers every layer may use (they import nothing else of dfkd_viz): atomic file
writes and image encoding (:mod:`dfkd_viz.util.io`)."""
