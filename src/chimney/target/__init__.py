"""chimney.target"""
