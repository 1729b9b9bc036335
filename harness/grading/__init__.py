"""Grading any implementation from outside: run the black-box scenarios against it and write
its report card (grade); the contract page's generated parts (contract)."""
