"""placeholder"""
class UMAPProjection: 
    method="umap"
def warm_up_umap(): pass
def umap_ready(): return False
