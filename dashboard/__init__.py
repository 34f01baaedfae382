"""The Streamlit results browser: ``streamlit run dashboard/app.py [-- --results DIR ...]``."""
