"""chimney.trace"""
