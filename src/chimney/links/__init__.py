"""chimney.links"""
