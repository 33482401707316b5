"""Operations: WorkOS webhook endpoint management and the doctor checks."""
