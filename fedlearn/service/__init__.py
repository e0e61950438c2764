"""Running fedlearn on one machine: the runtime file, the demo data, the process supervisor."""
