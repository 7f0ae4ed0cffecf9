"""chimney.net"""
