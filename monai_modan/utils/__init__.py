from .io import OutputError, atomic_path, atomic_write_json, atomic_write_text

__all__ = ["OutputError", "atomic_path", "atomic_write_json", "atomic_write_text"]
