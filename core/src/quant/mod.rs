//! Block formats (filled below).
