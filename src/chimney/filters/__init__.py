"""chimney.filters"""
