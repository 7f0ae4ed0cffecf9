"""chimney.tcp"""
