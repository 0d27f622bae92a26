"""imports: contact lists from CSV/XLSX files, hardened, scanned, mapped, and merged in parallel chunks."""
