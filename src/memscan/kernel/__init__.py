"""Read-only access to Linux: /proc files, their paths and errors, and pagemap."""
